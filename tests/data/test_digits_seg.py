"""Tests for the embedded digits segmentation benchmark (syn2real.data.digits_seg)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from syn2real.data.class_stats import class_stats_path, compute_class_stats, read_class_stats
from syn2real.data.digits import load_mnist_real
from syn2real.data.digits_seg import (
    DIGIT_SEG_CLASSES,
    IGNORE_INDEX,
    background_removed,
    default_seg_cache_dir,
    make_canvases,
    prepare_digits_segmentation,
    preview,
)
from syn2real.data.rare_class import RareClassSampling
from syn2real.data.segmentation import DigitsSegmentationDataModule

N_SYNTHETIC = 60


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist_real()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_digits_segmentation(tmp_path_factory.mktemp("seg") / "digits_seg", n_synthetic=N_SYNTHETIC)


def _manifest(paths: dict[str, Path]) -> dict:
    return json.loads((paths["synthetic"].parents[1] / "manifest.json").read_text())


def _read_list(list_file: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for line in list_file.read_text().splitlines():
        parts = line.split(" ")
        assert len(parts) == 2 and all(parts), f"bad line {line!r} in {list_file}"
        pairs.append((list_file.parent / parts[0], list_file.parent / parts[1]))
    return pairs


def _sources(domain_dir: Path) -> dict[str, list[int]]:
    rows = [line.split() for line in (domain_dir / "sources.txt").read_text().splitlines()]
    return {row[0]: [int(v) for v in row[1:]] for row in rows}


# ------------------------------------------------------------------------------------------ canvases


def test_label_rule_by_hand() -> None:
    # One digit on a canvas of its own size: the position is fixed, so the mask is the rule applied to the tile.
    tile = np.zeros((1, 28, 28), np.uint8)
    values = [255, 200, 128, 127, 60, 26, 25, 10, 0]
    tile[0, 0, : len(values)] = values
    images, masks = make_canvases(tile, np.array([3]), 1, np.random.default_rng(0), size=28, digits_per_canvas=1)
    assert images.shape == masks.shape == (1, 28, 28) and images.dtype == masks.dtype == np.uint8
    np.testing.assert_array_equal(images[0], tile[0])
    # >= 0.5 * 255 = 127.5 -> class 3 + 1; (0.1 * 255, 127.5) -> ignore; <= 25.5 -> background
    expected = [4, 4, 4, 255, 255, 255, 0, 0, 0]
    assert masks[0, 0, : len(values)].tolist() == expected
    assert (masks[0, 1:] == 0).all()
    # The thresholds are parameters.
    _, masks = make_canvases(
        tile, np.array([3]), 1, np.random.default_rng(0), size=28, digits_per_canvas=1, ink_threshold=0.2, ignore_low=0
    )
    assert masks[0, 0, : len(values)].tolist() == [4, 4, 4, 4, 4, 255, 255, 255, 0]


def test_overlapping_ink_is_ignored_and_boxes_overlap_boundedly() -> None:
    # Tiles inked over their whole 28x28 box: the label map shows the boxes and their intersection exactly.
    tiles = np.stack([np.full((28, 28), 200, np.uint8), np.full((28, 28), 255, np.uint8)])
    images, masks, order = make_canvases(
        tiles, np.array([2, 7]), 50, np.random.default_rng(1), reuse=True, return_indices=True,
        remove_background=False,  # uniform tiles: their border is their ink
    )
    assert order.shape == (50, 2)
    for image, mask, pair in zip(images, masks, order):
        assert sorted(pair.tolist()) == [0, 1]  # with two digits and reuse, each canvas has both
        overlap = int((mask == IGNORE_INDEX).sum())
        # In a 48 px canvas two 28 px boxes always intersect (>= 8 x 8); at most 25 % of a box.
        assert 64 <= overlap <= 0.25 * 28 * 28
        assert (mask == 3).sum() == (mask == 8).sum() == 28 * 28 - overlap
        assert set(np.unique(mask).tolist()) == {0, 3, 8, IGNORE_INDEX}
        # Intensities: the max of the tiles.
        assert (image[mask == IGNORE_INDEX] == 255).all() and (image[mask == 3] == 200).all()
        assert (image[mask == 0] == 0).all()


def test_fuzzy_edge_under_ink_keeps_the_ink_class() -> None:
    tiles = np.stack([np.full((28, 28), 255, np.uint8), np.full((28, 28), 60, np.uint8)])  # ink, fuzzy
    images, masks, order = make_canvases(
        tiles, np.array([0, 5]), 20, np.random.default_rng(2), reuse=True, return_indices=True,
        remove_background=False,
    )
    for image, mask in zip(images, masks):
        assert (mask[image == 255] == 1).all() and (image == 255).sum() == 28 * 28
        assert (mask[image == 60] == IGNORE_INDEX).all() and (image == 60).sum() > 0
        assert (mask[image == 0] == 0).all()


def test_make_canvases_is_seeded(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    digits, labels = mnist[0][:200], mnist[1][:200]
    a = make_canvases(digits, labels, 100, np.random.default_rng(7))
    b = make_canvases(digits, labels, 100, np.random.default_rng(7))
    c = make_canvases(digits, labels, 100, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_each_real_digit_used_once(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, masks, order = make_canvases(*mnist, 2500, np.random.default_rng(0), return_indices=True)
    assert images.shape == masks.shape == (2500, 48, 48)
    np.testing.assert_array_equal(np.sort(order.ravel()), np.arange(5000))
    # The digits' classes show up in their canvases' masks (unless overlap hid all their ink, which is rare).
    present = [(masks[m] == mnist[1][d] + 1).any() for m, pair in enumerate(order) for d in pair]
    assert np.mean(present) > 0.99


def test_reuse_spreads_digits_evenly() -> None:
    digits = np.zeros((7, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="reuse=True"):
        make_canvases(digits, np.arange(7), 4, np.random.default_rng(0))
    _, _, order = make_canvases(digits, np.arange(7), 10, np.random.default_rng(0), reuse=True, return_indices=True)
    counts = np.bincount(order.ravel(), minlength=7)
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 27}, "size must be >= 28"),
        ({"digits_per_canvas": 0}, "digits_per_canvas must be >= 1"),
        ({"ink_threshold": 1.5}, "ink_threshold must be in"),
        ({"ink_threshold": 0.2, "ignore_low": 0.3}, "ignore_low <= ink_threshold"),
        ({"size": 28, "digits_per_canvas": 2}, "cannot place 2 digits"),
        ({"n_canvases": -1}, "n_canvases must be >= 0"),
    ],
)
def test_make_canvases_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    args = {"digits": np.zeros((10, 28, 28), np.uint8), "labels": np.arange(10), "n_canvases": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_canvases(rng=np.random.default_rng(0), **args)


def test_make_canvases_rejects_bad_arrays() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uint8"):
        make_canvases(np.zeros((4, 28, 28), np.float32), np.arange(4), 1, rng)
    with pytest.raises(ValueError, match="labels must have shape"):
        make_canvases(np.zeros((4, 28, 28), np.uint8), np.arange(3), 1, rng)
    with pytest.raises(ValueError, match="digits 0..9"):
        make_canvases(np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 10]), 1, rng)
    with pytest.raises(TypeError, match="Generator"):
        make_canvases(np.zeros((4, 28, 28), np.uint8), np.arange(4), 1, 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ on disk


def test_layout_and_counts(built: dict[str, Path]) -> None:
    root = built["synthetic"].parents[1]
    assert set(built) == {"synthetic", "mnist_train", "mnist_val"}
    assert built["synthetic"] == root / "synthetic" / "train.txt"
    assert built["mnist_train"] == root / "mnist" / "train.txt"
    assert built["mnist_val"] == root / "mnist" / "val.txt"
    for domain in ("synthetic", "mnist"):  # beside the list files, where the segmentation data module looks
        assert (root / domain / "classes.txt").read_text().splitlines() == list(DIGIT_SEG_CLASSES)
    assert len(DIGIT_SEG_CLASSES) == 11 and DIGIT_SEG_CLASSES[0] == "background" and DIGIT_SEG_CLASSES[10] == "9"
    manifest = _manifest(built)
    assert manifest["counts"] == {"synthetic": N_SYNTHETIC, "mnist_train": 2000, "mnist_val": 500}
    assert {k: len(_read_list(p)) for k, p in built.items()} == manifest["counts"]
    assert not [p.name for p in root.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("key", ["synthetic", "mnist_train", "mnist_val"])
def test_list_file_format(built: dict[str, Path], key: str) -> None:
    allowed = set(range(len(DIGIT_SEG_CLASSES))) | {IGNORE_INDEX}
    pairs = _read_list(built[key])
    step = max(1, len(pairs) // 40)  # a sample of the real lists keeps the test fast
    for image_path, label_path in pairs[::step]:
        image, label = Image.open(image_path), Image.open(label_path)
        assert image.mode == label.mode == "L" and image.size == label.size == (48, 48)
        assert set(np.unique(np.asarray(label)).tolist()) <= allowed
    assert all(i.is_file() and lab.is_file() for i, lab in pairs)


def test_every_class_present_in_both_domains(built: dict[str, Path]) -> None:
    pixels = _manifest(built)["pixels"]
    for key in ("synthetic", "mnist_train", "mnist_val"):
        counts = pixels[key]
        total = sum(counts.values())
        assert total == {"synthetic": N_SYNTHETIC, "mnist_train": 2000, "mnist_val": 500}[key] * 48 * 48
        assert all(counts[c] > 0 for c in DIGIT_SEG_CLASSES), counts
        # two digits of ~13 % ink each on 48 x 48: background dominates, ignore is a small band
        assert 0.8 < counts["background"] / total < 0.95
        assert 0.005 < counts["ignore"] / total < 0.1


def test_mnist_split_disjoint_by_canvas_and_digit(built: dict[str, Path]) -> None:
    sources = _sources(built["mnist_val"].parent)
    used = sorted(d for pair in sources.values() for d in pair)
    assert used == list(range(5000))
    train = {Path(i).stem for i, _ in _read_list(built["mnist_train"])}
    val = {Path(i).stem for i, _ in _read_list(built["mnist_val"])}
    assert not train & val and len(train | val) == 2500
    train_digits = {d for c in train for d in sources[c]}
    val_digits = {d for c in val for d in sources[c]}
    assert not train_digits & val_digits and len(val_digits) == 1000
    # synthetic digits: each rendered one used once
    syn = _sources(built["synthetic"].parent)
    assert sorted(d for pair in syn.values() for d in pair) == list(range(2 * N_SYNTHETIC))


def test_real_labels_match_the_real_digits(built: dict[str, Path], mnist: tuple[np.ndarray, np.ndarray]) -> None:
    sources = _sources(built["mnist_val"].parent)
    for image_path, label_path in _read_list(built["mnist_val"])[:20]:
        label = np.asarray(Image.open(label_path))
        classes = {int(mnist[1][d]) + 1 for d in sources[image_path.stem]}
        assert set(np.unique(label).tolist()) - {0, IGNORE_INDEX} <= classes


def test_cache_is_reused(built: dict[str, Path]) -> None:
    root = built["synthetic"].parents[1]
    files = [root / "manifest.json", root / "mnist" / "val.txt", root / "synthetic" / "labels" / "00000.png"]
    before = [f.stat().st_mtime_ns for f in files]
    again = prepare_digits_segmentation(root, n_synthetic=N_SYNTHETIC)
    assert again == built
    assert [f.stat().st_mtime_ns for f in files] == before


def test_cache_rebuilt_when_parameters_change(built: dict[str, Path], tmp_path: Path) -> None:
    # A cache of ours built with other parameters (only its manifest and a stale file matter) is replaced.
    root = tmp_path / "seg"
    root.mkdir()
    old = _manifest(built)
    (root / "manifest.json").write_text(json.dumps({**old, "params": {**old["params"], "val_size": 500}}))
    (root / "stale.txt").write_text("from the old build")
    paths = prepare_digits_segmentation(root, n_synthetic=30, val_size=300)
    assert paths == {key: root / rel for key, rel in old["lists"].items()}
    manifest = _manifest(paths)
    assert manifest["params"]["n_synthetic"] == 30 and manifest["params"]["val_size"] == 300
    assert manifest["counts"] == {"synthetic": 30, "mnist_train": 2200, "mnist_val": 300}
    assert len(_read_list(paths["synthetic"])) == 30 and len(_read_list(paths["mnist_val"])) == 300
    assert not (root / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


def test_foreign_folder_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a digits segmentation cache"):
        prepare_digits_segmentation(tmp_path, n_synthetic=10)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_synthetic": 0}, "n_synthetic must be >= 1"),
        ({"val_size": 2500}, r"val_size must be in \[1, 2499\]"),
        ({"digits_per_canvas": 3, "size": 40}, "cannot place 3 digits"),
        ({"ignore_low": 0.6}, "ignore_low <= ink_threshold"),
    ],
)
def test_prepare_rejects_bad_parameters(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prepare_digits_segmentation(tmp_path / "seg", **kwargs)
    assert not (tmp_path / "seg").exists()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYN2REAL_CACHE", str(tmp_path))
    assert default_seg_cache_dir() == tmp_path / "digits_seg"
    monkeypatch.delenv("SYN2REAL_CACHE")
    assert default_seg_cache_dir() == Path.home() / ".cache" / "syn2real" / "digits_seg"


def test_preview(built: dict[str, Path], tmp_path: Path) -> None:
    out = preview(built, tmp_path / "preview.png", n=4, scale=2)
    image = Image.open(out)
    assert image.mode == "RGB" and image.width == 4 * 48 * 2 and image.height > 4 * 48 * 2
    pixels = np.asarray(image)
    assert (pixels == 255).all(axis=2).any()  # ignore pixels are white


def test_data_prep_script(built: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = Path(__file__).resolve().parents[2] / "data_prep" / "digits_seg.py"
    spec = importlib.util.spec_from_file_location("data_prep_digits_seg", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = built["synthetic"].parents[1]
    out_png = tmp_path / "preview.png"
    assert module.main(["--root", str(root), "--n_synthetic", str(N_SYNTHETIC), "--preview", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert f"mnist_val: {built['mnist_val']} (500 canvases)" in out and "ignore=" in out
    assert out_png.is_file()


def test_background_level_is_removed_before_the_label_rule() -> None:
    # a rendered digit on a grey (60) background: strokes labelled, the grey box is background, not 255
    grey = np.full((28, 28), 60, np.uint8)
    grey[10:18, 12:15] = 255
    mnist_like = np.zeros((28, 28), np.uint8)
    mnist_like[5:20, 5:8] = 128  # t = 0.502: ink on a black border, unchanged by the removal
    tiles = background_removed(np.stack([grey, mnist_like]))
    assert np.allclose(tiles[0][grey == 60], 0.0) and np.allclose(tiles[0][grey == 255], 1.0)
    assert np.allclose(tiles[1], mnist_like / 255.0)
    _, masks = make_canvases(grey[None], np.array([4]), 1, np.random.default_rng(0), size=28, digits_per_canvas=1)
    assert set(np.unique(masks[0]).tolist()) == {0, 5} and (masks[0] == 5).sum() == 8 * 3


# ------------------------------------------------------------------------------------------ rare-class sampling


def test_class_stats_beside_the_training_lists(built: dict[str, Path]) -> None:
    manifest = _manifest(built)
    for key in ("synthetic", "mnist_train"):
        stats = read_class_stats(built[key])
        assert stats["pixels"] == [manifest["pixels"][key][c] for c in DIGIT_SEG_CLASSES]
        assert stats["ignored_pixels"] == manifest["pixels"][key]["ignore"]
    assert not class_stats_path(built["mnist_val"]).exists()  # evaluation only: never a source
    # a cache from before the statistics existed gets them on its next use, equal to the files read back
    path = class_stats_path(built["synthetic"])
    written = path.read_text()
    path.unlink()
    prepare_digits_segmentation(built["synthetic"].parents[1], n_synthetic=N_SYNTHETIC)
    assert path.read_text() == written
    assert read_class_stats(built["synthetic"]) == compute_class_stats(built["synthetic"])


def test_rare_class_sampling_on_the_digits(built: dict[str, Path]) -> None:
    dm = DigitsSegmentationDataModule(cache_dir=str(built["synthetic"].parents[1]), n_synthetic=N_SYNTHETIC,
                                      batch_size=4, rare_class_sampling=RareClassSampling())
    dm.prepare_data()
    dm.setup("fit")
    probs = dm.rare_class_probabilities
    assert list(probs) == list(DIGIT_SEG_CLASSES) and sum(probs.values()) == pytest.approx(1.0)
    assert probs["background"] < 1e-30  # ~85 % of the pixels: practically never drawn at T = 0.01
    # min_pixels 3000 > a 48x48 canvas: capped at 1 % of it (24 px), so every canvas with enough of a digit counts
    plan = dm.rare_class_plan
    assert all(len(plan.holders[c]) >= 3 for c in range(1, 11))
    x, y = next(iter(dm.train_dataloader().iterables["source"]))
    assert x.shape == (4, 1, 48, 48) and y.shape == (4, 48, 48)
