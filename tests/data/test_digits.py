"""Tests for the embedded synthetic->real digits benchmark (syn2real.data.digits, data_prep/digits.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from syn2real.data import digits
from syn2real.data.digits import (
    DEFAULT_RANDOMIZATION,
    DIGIT_CLASSES,
    RANDOMIZATION_LEVELS,
    default_cache_dir,
    find_digit_fonts,
    load_mnist_real,
    prepare_digits,
    render_digit,
    render_synthetic_digits,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Measured on matplotlib 3.11's bundled fonts. Rejected: DejaVu*Display and STIXNonUni*/STIXSiz* (no digit
# codepoints), LastResortHE (ten identical boxes), cmex10/cmsy10 (symbols at the digit codepoints),
# cmmi10 (old-style numerals).
EXPECTED_FONTS = {
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "STIXGeneral",
    "STIXGeneralBol",
    "STIXGeneralItalic",
    "STIXGeneralBolIta",
    "cmr10",
    "cmb10",
    "cmss10",
    "cmti10",
    "cmtt10",
}

N_SMALL = 200


def _com(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = images.astype(np.float64)
    mass = f.sum(axis=(1, 2))
    idx = np.arange(f.shape[1])
    return (f.sum(axis=2) * idx).sum(axis=1) / mass, (f.sum(axis=1) * idx).sum(axis=1) / mass


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist_real()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_digits(tmp_path_factory.mktemp("digits"), n_synthetic=N_SMALL, seed=0)


def _copy_root(paths: dict[str, Path], dest: Path, synthetic: bool = True) -> Path:
    """A fresh root holding a copy of the synthetic folder and a symlink to the (large) MNIST folder."""
    dest.mkdir()
    (dest / "mnist").symlink_to(paths["mnist"], target_is_directory=True)
    if synthetic:
        shutil.copytree(paths["synthetic"], dest / paths["synthetic"].name)
    return dest


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---------------------------------------------------------------------------------------------- fonts


def test_accepted_fonts_are_the_expected_21() -> None:
    fonts = find_digit_fonts()
    assert {f.stem for f in fonts} == EXPECTED_FONTS
    assert fonts == sorted(fonts)


def test_find_digit_fonts_custom_dir(tmp_path: Path) -> None:
    src = find_digit_fonts()[0].parent
    for name in ("DejaVuSans.ttf", "cmsy10.ttf", "cmmi10.ttf", "LastResortHE-Regular.ttf"):
        shutil.copy(src / name, tmp_path / name)
    assert [f.name for f in find_digit_fonts(tmp_path)] == ["DejaVuSans.ttf"]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYN2REAL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "digits"
    monkeypatch.delenv("SYN2REAL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "syn2real" / "digits"


# ------------------------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("randomize", [False, True])
def test_render_digit_mnist_framing(randomize: bool, mnist: tuple[np.ndarray, np.ndarray]) -> None:
    fonts = find_digit_fonts()
    rng = np.random.default_rng(0)
    images = np.stack(
        [render_digit(d, fonts[(3 * d + i) % len(fonts)], rng, randomize) for d in range(10) for i in range(6)]
    )
    assert images.dtype == np.uint8 and images.shape == (60, 28, 28)
    assert (images.max(axis=(1, 2)) >= 150).all()
    f = images.astype(np.float64)
    if not randomize:
        # Pure framing: the longest side is exactly the 20 px box, nothing outside the image.
        ink = images > 0
        heights = ink.any(axis=2).sum(axis=1)
        widths = ink.any(axis=1).sum(axis=1)
        assert (np.maximum(heights, widths) <= 21).all() and (np.maximum(heights, widths) >= 19).all()
    central = f[:, 4:24, 4:24].sum() / f.sum()
    assert central > (0.97 if not randomize else 0.85)

    # MNIST puts the centre of mass at pixel 14 (not 13.5); measure it rather than assume it.
    real_cy, real_cx = _com(mnist[0])
    assert abs(real_cy.mean() - 14.0) < 0.1 and abs(real_cx.mean() - 14.0) < 0.1
    cy, cx = _com(images)
    tol = 0.6 if not randomize else 2.0  # randomised digits are shifted by up to 1 px and may have a background
    assert np.abs(cy - real_cy.mean()).max() < tol and np.abs(cx - real_cx.mean()).max() < tol
    assert abs(cy.mean() - real_cy.mean()) < 0.4 and abs(cx.mean() - real_cx.mean()) < 0.4


def test_render_digit_is_white_on_black() -> None:
    img = render_digit(7, find_digit_fonts()[0], np.random.default_rng(1), randomize=False)
    assert img[0].max() == 0 and img[-1].max() == 0 and img[:, 0].max() == 0 and img[:, -1].max() == 0
    assert img.max() > 200


def test_render_digit_rejects_bad_digit() -> None:
    with pytest.raises(ValueError):
        render_digit(10, find_digit_fonts()[0], np.random.default_rng(0))


def test_render_synthetic_digits_deterministic() -> None:
    a_x, a_y = render_synthetic_digits(60, seed=3, workers=1)
    b_x, b_y = render_synthetic_digits(60, seed=3, workers=1)
    c_x, _ = render_synthetic_digits(60, seed=4, workers=1)
    assert np.array_equal(a_x, b_x) and np.array_equal(a_y, b_y)
    assert not np.array_equal(a_x, c_x)


def test_render_synthetic_digits_independent_of_workers() -> None:
    # 600 images span three 250-image jobs, so two workers really split the work.
    x1, y1 = render_synthetic_digits(600, seed=5, workers=1)
    x2, y2 = render_synthetic_digits(600, seed=5, workers=2)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


# -------------------------------------------------------------------------- randomization levels


def test_default_randomization_renders_as_before_the_levels() -> None:
    # sha256 of render_synthetic_digits(30, seed=7) before the levels existed: every cached synthetic folder and
    # every result of docs/results.md was rendered so; a change here must bump RENDERER_VERSION.
    import hashlib

    x, y = render_synthetic_digits(30, seed=7, workers=1)
    assert DEFAULT_RANDOMIZATION == "photometric"
    assert hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest() == (
        "0593491d7abc94cf76a07b9089a67ca43927f4cb9e2fd921405af8c75fa58b9f"
    )


@pytest.mark.parametrize("level", RANDOMIZATION_LEVELS)
def test_randomization_level_deterministic_under_seed(level: str) -> None:
    a_x, a_y = render_synthetic_digits(40, seed=3, workers=1, randomization=level)
    b_x, b_y = render_synthetic_digits(40, seed=3, workers=1, randomization=level)
    c_x, _ = render_synthetic_digits(40, seed=4, workers=1, randomization=level)
    assert np.array_equal(a_x, b_x) and np.array_equal(a_y, b_y)
    assert not np.array_equal(a_x, c_x)


def test_randomization_levels_add_what_they_name() -> None:
    fonts = find_digit_fonts()
    n = 200
    by_level = {level: render_synthetic_digits(n, seed=1, workers=1, randomization=level) for level in
                RANDOMIZATION_LEVELS}
    # fonts: every image is one font's plain glyph
    plain = {render_digit(d, f, np.random.default_rng(0), randomize=False).tobytes(): d for f in fonts
             for d in range(10)}
    x, y = by_level["fonts"]
    assert all(plain.get(img.tobytes()) == label for img, label in zip(x, y))
    # geometry: no image is a plain glyph any more, but strokes keep their font's width and nothing is blurred,
    # textured or noisy (the background is exactly black)
    x, _ = by_level["geometry"]
    assert not any(img.tobytes() in plain for img in x)
    assert (x[:, 0, :] == 0).all() and (x[:, :, 0] == 0).all()

    assert (by_level["stroke"][0][:, 0, :] == 0).all()
    # photometric: some backgrounds are grey or noisy, some inks dimmer than white
    x, _ = by_level["photometric"]
    assert (x[:, 0, :].max(axis=1) > 0).mean() > 0.1
    assert (x.max(axis=(1, 2)) < 250).mean() > 0.1
    # texture: the background varies inside each image, and the ink stays brighter than the background
    x, _ = by_level["texture"]
    border = np.concatenate([x[:, :3, :].reshape(n, -1), x[:, -3:, :].reshape(n, -1)], axis=1).astype(float)
    assert (border.std(axis=1) > 2).mean() > 0.7
    ink = np.sort(x.reshape(n, -1), axis=1)[:, -20:].mean(axis=1)
    assert (ink > np.percentile(border, 90, axis=1) + 40).all()


def test_stroke_level_adds_stroke_width_and_elastic_distortion(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {"stroke": 0, "elastic": 0}

    def spy(name: str, fn):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(digits, "_weighted_glyph", spy("stroke", digits._weighted_glyph))
    monkeypatch.setattr(digits, "_smooth_field", spy("elastic", digits._smooth_field))
    render_synthetic_digits(30, seed=0, workers=1, randomization="geometry")
    assert calls == {"stroke": 0, "elastic": 0}
    render_synthetic_digits(30, seed=0, workers=1, randomization="stroke")
    assert calls["stroke"] == 30 and calls["elastic"] >= 2 * 20  # elastic in 90 % of the images, two fields each


def test_unknown_randomization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown digit randomization 'blur'.*fonts, geometry"):
        render_synthetic_digits(10, randomization="blur")
    with pytest.raises(ValueError, match="unknown digit randomization"):
        prepare_digits(tmp_path, n_synthetic=10, randomization="all")
    from syn2real.data import DigitsDataModule

    with pytest.raises(ValueError, match="unknown digit randomization"):
        DigitsDataModule(cache_dir=str(tmp_path), randomization="everything")  # type: ignore[arg-type]


def test_prepare_digits_other_randomization_has_its_own_folder(prepared: dict[str, Path], tmp_path: Path) -> None:
    root = _copy_root(prepared, tmp_path / "root")
    paths = prepare_digits(root, n_synthetic=N_SMALL, seed=0, randomization="texture")
    assert paths["synthetic"] == root / f"synthetic_n{N_SMALL}_s0_texture"
    manifest = json.loads((paths["synthetic"] / "_manifest.json").read_text())
    assert manifest["randomization"] == "texture"
    # the default folder is untouched and its manifest has no randomization key (caches stay valid)
    assert "randomization" not in json.loads((root / f"synthetic_n{N_SMALL}_s0" / "_manifest.json").read_text())
    xs, ys = render_synthetic_digits(N_SMALL, seed=0, randomization="texture")
    with Image.open(paths["synthetic"] / str(ys[5]) / "00005.png") as img:
        assert np.array_equal(np.asarray(img), xs[5])


@pytest.mark.parametrize("n", [0, 7, 95, 200])
def test_render_synthetic_digits_balanced(n: int) -> None:
    x, y = render_synthetic_digits(n, seed=0, workers=1)
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


# --------------------------------------------------------------------------------------------- MNIST


def test_load_mnist_real(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = mnist
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (5000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    assert x.min() == 0 and x.max() == 255
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    assert border.mean() < 1.0  # white digit on black background
    assert x.mean() < 50


def test_synthetic_to_real_gap_is_learnable(mnist: tuple[np.ndarray, np.ndarray]) -> None:
    """A nearest-centroid classifier fit on synthetic digits must beat chance on real MNIST by far.

    Measured: ~0.52 with 2,000 synthetic digits (chance 0.10); broken framing or inverted polarity drops it
    to chance level.
    """

    def features(x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1).astype(np.float64)
        f -= f.mean(axis=1, keepdims=True)
        return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-8)

    xs, ys = render_synthetic_digits(2000, seed=0)
    fs = features(xs)
    centroids = np.stack([fs[ys == k].mean(axis=0) for k in range(10)])
    pred = np.argmax(features(mnist[0]) @ centroids.T, axis=1)
    assert (pred == mnist[1]).mean() > 0.40


# ------------------------------------------------------------------------------------------- on disk


def test_prepare_digits_layout(prepared: dict[str, Path]) -> None:
    root = prepared["synthetic"].parent
    assert prepared["synthetic"] == root / f"synthetic_n{N_SMALL}_s0"
    assert prepared["mnist"] == root / "mnist"
    expected_counts = {"synthetic": N_SMALL // 10, "mnist": 500}
    for domain, folder in prepared.items():
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == list(DIGIT_CLASSES)
        manifest = json.loads((folder / "_manifest.json").read_text())
        assert manifest["per_class"] == {c: expected_counts[domain] for c in DIGIT_CLASSES}
        for cls in DIGIT_CLASSES:
            files = sorted((folder / cls).glob("*.png"))
            assert len(files) == expected_counts[domain]
            assert all(len(f.stem) == 5 and f.stem.isdigit() for f in files)
        with Image.open(next((folder / "3").glob("*.png"))) as img:
            assert img.mode == "L" and img.size == (28, 28)
    manifest = json.loads((prepared["synthetic"] / "_manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["fonts"]) == EXPECTED_FONTS and manifest["version"]
    assert _leftovers(root) == []


def test_prepare_digits_png_matches_arrays(prepared: dict[str, Path], mnist: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = mnist
    with Image.open(prepared["mnist"] / str(y[42]) / "00042.png") as img:
        assert np.array_equal(np.asarray(img), x[42])
    xs, ys = render_synthetic_digits(N_SMALL, seed=0)
    with Image.open(prepared["synthetic"] / str(ys[17]) / "00017.png") as img:
        assert np.array_equal(np.asarray(img), xs[17])


def test_prepare_digits_reuses(prepared: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-rendered although the folder was complete")

    monkeypatch.setattr(digits, "render_synthetic_digits", boom)
    root = prepared["synthetic"].parent
    files = sorted(root.rglob("*.png"))
    before = [f.stat().st_mtime_ns for f in files]
    assert prepare_digits(root, n_synthetic=N_SMALL, seed=0) == prepared
    # overwrite only replaces folders whose manifest is missing or different
    assert prepare_digits(root, n_synthetic=N_SMALL, seed=0, overwrite=True) == prepared
    assert [f.stat().st_mtime_ns for f in files] == before


def test_prepare_digits_mismatch_and_overwrite(prepared: dict[str, Path], tmp_path: Path) -> None:
    root = _copy_root(prepared, tmp_path / "root")
    folder = root / f"synthetic_n{N_SMALL}_s0"
    manifest_path = folder / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "version": "stale"}))
    with pytest.raises(FileExistsError, match=folder.name) as err:
        prepare_digits(root, n_synthetic=N_SMALL, seed=0)
    assert "overwrite=True" in str(err.value)

    manifest_path.unlink()
    with pytest.raises(FileExistsError, match=folder.name):
        prepare_digits(root, n_synthetic=N_SMALL, seed=0)

    (folder / "stray.txt").write_text("old content")
    prepare_digits(root, n_synthetic=N_SMALL, seed=0, overwrite=True)
    assert json.loads(manifest_path.read_text()) == manifest
    assert not (folder / "stray.txt").exists()
    assert _leftovers(root) == []


def test_prepare_digits_concurrent_writer_wins(
    prepared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another process (e.g. another DDP rank) renames its folder into place first, reuse it."""
    root = _copy_root(prepared, tmp_path / "root", synthetic=False)
    original = digits.render_synthetic_digits

    def render_while_other_finishes(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        out = original(*args, **kwargs)
        shutil.copytree(prepared["synthetic"], root / prepared["synthetic"].name)
        (root / prepared["synthetic"].name / "theirs.txt").write_text("written by the other process")
        return out

    monkeypatch.setattr(digits, "render_synthetic_digits", render_while_other_finishes)
    paths = prepare_digits(root, n_synthetic=N_SMALL, seed=0)
    assert (paths["synthetic"] / "theirs.txt").exists()
    assert _leftovers(root) == []


# --------------------------------------------------------------------------------------------- script


def test_data_prep_script(prepared: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("data_prep_digits", REPO_ROOT / "data_prep" / "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    preview = tmp_path / "preview.png"
    root = prepared["synthetic"].parent
    assert module.main(["--root", str(root), "--n_synthetic", str(N_SMALL), "--preview", str(preview)]) == 0
    out = capsys.readouterr().out
    assert str(prepared["synthetic"]) in out and "5000 images" in out
    with Image.open(preview) as img:
        assert img.size[0] > img.size[1] > 0

    levels = tmp_path / "levels.png"
    assert module.main(["--preview_levels", str(levels), "--seed", "3"]) == 0
    with Image.open(levels) as img:  # one 28 px row per level, 2 samples of each digit, scaled x3
        assert img.size == (20 * 28 * 3, 5 * 28 * 3)
        rows = np.asarray(img.convert("L")).reshape(5, 28 * 3, -1)
    assert rows[0].max() > 0 and not np.array_equal(rows[0], rows[4])
    assert (rows[0][:3].max() == 0) and rows[4][:3].max() > 0  # fonts: black above the digit; texture: not


def test_randomization_levels_spelled_once_per_interface() -> None:
    """The config's Literal and data_prep's choices list the renderer's levels, in order (no drift)."""
    import typing

    from syn2real.data import DigitsDataModule

    hint = typing.get_type_hints(DigitsDataModule.__init__)["randomization"]
    assert typing.get_args(hint) == RANDOMIZATION_LEVELS
    spec = importlib.util.spec_from_file_location("data_prep_digits_levels", REPO_ROOT / "data_prep" / "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    action = next(a for a in module.parser()._actions if a.dest == "randomization")
    assert tuple(action.choices) == RANDOMIZATION_LEVELS and action.default == DEFAULT_RANDOMIZATION
