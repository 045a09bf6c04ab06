"""GTA5 / Cityscapes / SYNTHIA preparation on tiny trees in the official encodings."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seg_layouts import (
    CITYSCAPES_FIXTURE_IDS,
    SYNTHIA_FIXTURE_IDS,
    make_cityscapes_tree,
    make_gta5_tree,
    make_synthia_tree,
)

from syn2real.data.datasets import CorruptImageError, DatasetLayoutError
from syn2real.data.seg_labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    SYNTHIA_13_CLASSES,
    SYNTHIA_16_CLASSES,
    SYNTHIA_ID_TO_TRAINID,
    build_lut,
    classes_for,
    colorize,
    map_labels,
    palette_for,
    subset_lut,
)
from syn2real.data.seg_prep import prepare_cityscapes, prepare_gta5, prepare_synthia, read_label_ids

REPO = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_prep", REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected(ids: np.ndarray, mapping: dict[int, int], num_classes: int) -> np.ndarray:
    """Per-pixel reference: dataset id -> 19-class train id -> protocol id, by a plain loop."""
    names = classes_for(num_classes)
    out = np.empty(ids.shape, dtype=np.uint8)
    for y in range(ids.shape[0]):
        for x in range(ids.shape[1]):
            train_id = mapping.get(int(ids[y, x]), 255)
            name = CITYSCAPES_CLASSES[train_id] if train_id != 255 else None
            out[y, x] = names.index(name) if name in names else 255
    return out


def _read_list(list_file: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for line in list_file.read_text().splitlines():
        image, label = line.split(" ")
        assert not os.path.isabs(image) and not os.path.isabs(label)
        pairs.append((list_file.parent / image, list_file.parent / label))
    return pairs


def _check_output(out: Path, lists: dict[str, int], num_classes: int) -> list[tuple[Path, Path]]:
    """List files resolve relative to their folder; each pair exists with equal sizes; labels are 8-bit L ids."""
    assert (out / "classes.txt").read_text().splitlines() == classes_for(num_classes)
    assert not list(out.rglob("*.tmp"))
    all_pairs = []
    for name, count in lists.items():
        pairs = _read_list(out / name)
        assert len(pairs) == count
        for image, label in pairs:
            assert image.is_file() and label.is_file()
            with Image.open(image) as im, Image.open(label) as lab:
                assert im.size == lab.size and lab.mode == "L"
                values = set(np.unique(np.array(lab)).tolist())
            assert values <= set(range(num_classes)) | {255}
        all_pairs += pairs
    return all_pairs


def test_tables_and_luts() -> None:
    assert len(CITYSCAPES_CLASSES) == len(CITYSCAPES_PALETTE) == 19
    assert sorted(CITYSCAPES_ID_TO_TRAINID.values()) == list(range(19))
    assert sorted(SYNTHIA_ID_TO_TRAINID.values()) == list(range(19))
    assert len(SYNTHIA_16_CLASSES) == 16 and len(SYNTHIA_13_CLASSES) == 13
    assert "terrain" not in SYNTHIA_16_CLASSES and "pole" not in SYNTHIA_13_CLASSES
    assert palette_for(13)[SYNTHIA_13_CLASSES.index("sky")] == (70, 130, 180)
    lut16 = subset_lut(16)
    assert lut16.dtype == np.uint8 and lut16.shape == (256,)
    assert lut16[9] == lut16[14] == lut16[16] == lut16[255] == 255 and lut16[10] == 9  # sky is the 10th of 16
    assert subset_lut(13)[3] == 255 and subset_lut(13)[6] == 3  # wall gone; traffic light after building
    lut = build_lut(CITYSCAPES_ID_TO_TRAINID)
    ids16 = np.array([[7, 33, 300], [0, 26, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(map_labels(ids16, lut), [[0, 18, 255], [255, 13, 255]])
    np.testing.assert_array_equal(map_labels(ids16.astype(np.uint8), lut)[0, :2], [0, 18])
    rgb = colorize(np.array([[0, 255], [18, 200]], dtype=np.uint8), CITYSCAPES_PALETTE)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[1, 0]) == (119, 11, 32)
    assert rgb[0, 1].sum() == 0 and rgb[1, 1].sum() == 0
    with pytest.raises(ValueError, match="19, 16 or 13"):
        classes_for(12)


def test_gta5_mapping_mismatch_resume_and_script(tmp_path: Path) -> None:
    root = make_gta5_tree(tmp_path / "gta5", n=4, mismatch_index=1)
    with Image.open(root / "labels" / "00001.png") as lab:
        assert lab.mode == "P"
    raw = set()
    for i in range(4):
        raw |= set(np.unique(read_label_ids(root / "labels" / f"{i + 1:05d}.png", "indexed")).tolist())
    assert raw == set(CITYSCAPES_FIXTURE_IDS)  # every mapped id and some ignored ones

    summary = prepare_gta5(root)
    out = root / "syn2real" / "19classes"
    assert summary["counts"]["written"] == 4 and summary["counts"]["mismatched"] == 1
    assert summary["mismatched_files"][0]["label"] == "labels/00002.png"
    assert summary["mismatched_files"][0]["action"] == "resized"
    assert json.loads((out / "summary.json").read_text())["mismatch_rule"] == "resize"
    pairs = _check_output(out, {"train.txt": 4}, 19)
    assert (out / "train.txt").read_text().splitlines()[0] == "../../images/00001.png labels/00001.png"
    ids = read_label_ids(root / "labels" / "00001.png", "indexed")
    np.testing.assert_array_equal(np.array(Image.open(pairs[0][1])), _expected(ids, CITYSCAPES_ID_TO_TRAINID, 19))
    # the mismatched label is resized to its image with nearest neighbour: still only valid ids
    with Image.open(pairs[1][1]) as lab:
        assert lab.size == (64, 48)

    # resume: nothing rewritten, counted as done, files untouched
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()}
    again = prepare_gta5(root)
    assert again["counts"]["written"] == 0 and again["counts"]["done"] == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()} == mtimes
    newer = root / "labels" / "00003.png"  # a source changed after conversion is converted again
    os.utime(newer, ns=(newer.stat().st_atime_ns, mtimes[out / "labels" / "00003.png"] + 10**9))
    assert prepare_gta5(root)["counts"] == {**again["counts"], "written": 1, "done": 3}
    with pytest.raises(DatasetLayoutError, match="already holds gta5 labels with 19 classes"):
        prepare_gta5(root, out=out, num_classes=16)

    # skip rule via the script: the mismatched pair is left out of the list
    skip_out = tmp_path / "skip13"
    assert _script("gta5").main(["--root", str(root), "--out", str(skip_out), "--num_classes", "13",
                                 "--mismatch", "skip", "--workers", "2"]) == 0
    summary13 = json.loads((skip_out / "summary.json").read_text())
    assert summary13["counts"]["skipped_mismatch"] == 1 and summary13["lists"] == {"train.txt": 3}
    assert summary13["mismatched_files"][0]["action"] == "skipped"
    pairs13 = _check_output(skip_out, {"train.txt": 3}, 13)
    assert all("00002" not in str(p[0]) for p in pairs13)
    np.testing.assert_array_equal(np.array(Image.open(pairs13[0][1])), _expected(ids, CITYSCAPES_ID_TO_TRAINID, 13))


def test_cityscapes_splits_and_16_classes(tmp_path: Path) -> None:
    root = make_cityscapes_tree(tmp_path / "cs", n_train=4, n_val=2)
    summary = prepare_cityscapes(root, num_classes=16)
    out = root / "syn2real" / "16classes"
    assert summary["lists"] == {"train.txt": 4, "val.txt": 2} and summary["classes"] == SYNTHIA_16_CLASSES
    pairs = _check_output(out, {"train.txt": 4, "val.txt": 2}, 16)
    first = (out / "train.txt").read_text().splitlines()[0]
    assert first == ("../../leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png "
                     "labels/train/aachen/aachen_000000_000019.png")
    source = root / "gtFine" / "val" / "bochum" / "bochum_000000_000020_gtFine_labelIds.png"
    ids = np.array(Image.open(source))
    label = out / "labels" / "val" / "bochum" / "bochum_000000_000020.png"
    assert label in [p[1] for p in pairs]
    np.testing.assert_array_equal(np.array(Image.open(label)), _expected(ids, CITYSCAPES_ID_TO_TRAINID, 16))
    assert _script("cityscapes").main(["--root", str(root), "--num_classes", "16"]) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 6


def test_synthia_reads_class_from_red_channel(tmp_path: Path) -> None:
    root = make_synthia_tree(tmp_path / "synthia", n=4)
    import cv2

    raw = cv2.imread(str(root / "GT" / "LABELS" / "0000000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (48, 64, 3) and raw[..., 1].max() > 255
    classes = set()
    for i in range(4):
        classes |= set(np.unique(read_label_ids(root / "GT" / "LABELS" / f"{i:07d}.png", "synthia")).tolist())
    assert classes == set(SYNTHIA_FIXTURE_IDS)
    summary = prepare_synthia(root)
    assert summary["counts"]["written"] == 4
    pairs = _check_output(root / "syn2real" / "19classes", {"train.txt": 4}, 19)
    np.testing.assert_array_equal(np.array(Image.open(pairs[0][1])), _expected(raw[..., 2], SYNTHIA_ID_TO_TRAINID, 19))
    out13 = tmp_path / "s13"
    assert _script("synthia").main(["--root", str(root), "--out", str(out13), "--num_classes", "13"]) == 0
    pairs13 = _check_output(out13, {"train.txt": 4}, 13)
    np.testing.assert_array_equal(np.array(Image.open(pairs13[0][1])),
                                  _expected(raw[..., 2], SYNTHIA_ID_TO_TRAINID, 13))


def test_layout_errors_name_the_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gta = make_gta5_tree(tmp_path / "gta5", n=2)
    (gta / "labels" / "00002.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 image\(s\) without a label: 00002"):
        prepare_gta5(gta)
    assert prepare_gta5(gta, allow_missing=True)["counts"]["missing_label"] == 1
    (gta / "labels").rename(gta / "gt")
    with pytest.raises(DatasetLayoutError, match="no labels/ folder; expected images/00001.png and labels/00001.png"):
        prepare_gta5(gta)
    assert _script("gta5").main(["--root", str(gta)]) == 2
    assert "no labels/ folder" in capsys.readouterr().err

    cs = tmp_path / "cs"
    (cs / "leftImg8bit" / "train").mkdir(parents=True)
    (cs / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"no leftImg8bit/val/ folder.*_gtFine_labelIds.png"):
        prepare_cityscapes(cs)
    with pytest.raises(DatasetLayoutError, match=r"<city>/\*_leftImg8bit.png"):
        prepare_cityscapes(cs, splits=("train",))

    synthia = tmp_path / "synthia"
    (synthia / "RGB").mkdir(parents=True)
    (synthia / "GT").mkdir()
    with pytest.raises(DatasetLayoutError, match="no GT/LABELS/ folder"):
        prepare_synthia(synthia)


def test_corrupt_label_names_the_file(tmp_path: Path) -> None:
    root = make_synthia_tree(tmp_path / "synthia", n=2, size=(16, 16))
    bad = root / "GT" / "LABELS" / "0000001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    with pytest.raises(CorruptImageError, match="0000001.png"):
        prepare_synthia(root)
    summary = prepare_synthia(root, skip_corrupt=True)
    assert summary["counts"]["skipped_corrupt"] == 1 and summary["lists"] == {"train.txt": 1}
    assert "0000001.png" in summary["corrupt_files"][0]
    assert not list((root / "syn2real").rglob("*.tmp"))


def test_unknown_label_ids_are_counted_warned_and_an_error_above_the_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_gta5_tree(tmp_path / "gta5", n=4)
    raw = {f"labels/{i + 1:05d}.png": read_label_ids(root / "labels" / f"{i + 1:05d}.png", "indexed") for i in range(4)}
    # 34 is no Cityscapes label id: it used to become 255 without a trace
    expected = {name: int((ids == 34).sum()) for name, ids in raw.items() if (ids == 34).any()}
    assert expected
    with caplog.at_level("WARNING"):
        summary = prepare_gta5(root)
    assert summary["unknown_ids"] == {"34": sum(expected.values())}
    assert summary["unknown_id_files"] == {"34": len(expected)}
    assert summary["files_with_unknown_ids"] == [{"label": k, "ids": {"34": v}} for k, v in expected.items()]
    assert summary["counts"]["files_with_unknown_ids"] == len(expected)
    assert "id 34" in caplog.text and "mapped to 255" in caplog.text
    # a rerun keeps the converted labels and still reports their unknown ids
    again = prepare_gta5(root)
    assert again["counts"]["done"] == 4 and again["unknown_ids"] == summary["unknown_ids"]

    # a label made mostly of ids the dataset does not have is an error naming the file, unless the flag allows it
    bad = root / "labels" / "00003.png"
    ids = raw["labels/00003.png"].copy()
    ids[:, : ids.shape[1] // 2] = 200
    Image.fromarray(ids.astype(np.uint8)).save(bad)
    with pytest.raises(DatasetLayoutError, match=r"00003\.png: 5\d\.\d% of its pixels hold ids \[(34, )?200\].*"
                                                 r"--max_unknown_fraction"):
        prepare_gta5(root, out=tmp_path / "strict")
    assert _script("gta5").main(["--root", str(root), "--out", str(tmp_path / "strict")]) == 2
    assert _script("gta5").main(["--root", str(root), "--out", str(tmp_path / "lenient"),
                                 "--max_unknown_fraction", "0.9"]) == 0
    lenient = json.loads((tmp_path / "lenient" / "summary.json").read_text())
    assert lenient["unknown_ids"]["200"] == int((ids == 200).sum()) and lenient["max_unknown_fraction"] == 0.9
