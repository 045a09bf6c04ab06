"""ImageNet-C common corruptions (Hendrycks & Dietterich, ICLR 2019): the 15 benchmark types and the 4 extra
(validation) types, severities 1–5, with the published parameter tables, on numpy / SciPy / OpenCV / Pillow.
Every random draw comes from the numpy ``Generator`` passed in, so a seed fixes the result.

Conventions, and where this differs from the reference code (ImageNet-C as packaged by ``imagecorruptions`` 1.1.2):

- parameters are the published per-severity tables; like the reference, they are in absolute pixels (noise, blur
  radii, glass-blur offsets, motion-blur length, snow, spatter, frost texture), and relative to the image only where
  the reference scales them: elastic transform (smoothing and displacement ∝ height/width), fog (a fractal as large
  as the next power of two ≥ the longer side), zoom blur and pixelate (factors). They assume images of ~224 px;
  any size ≥ 1 px works;
- the result is truncated to uint8 as the reference's ``np.uint8`` cast does (not rounded);
- gray images (C = 1) follow the reference's single-channel branches: per-pixel noise at full strength, snow
  brightens with ``1.5 x + 0.5``, spatter and frost add the luma of their colour, and ``saturate`` returns the image
  unchanged (no chroma to scale);
- glass blur reproduces the published behaviour: the "swap" in the reference assigns through numpy views, so each
  step copies the neighbour's pixel into place (pixels repeat rather than permute);
- frost: the reference blends crops of frost photographs shipped with the package; here the frost layer is
  generated procedurally (feathery ice needles along a random flow field, over a plasma-fractal shading), drawn
  to the mean colour and contrast measured from those photographs. Frost matches the reference in statistics only;
- impulse noise draws its salt-and-pepper mask from ``rng`` itself instead of through scikit-image's
  ``random_noise`` (same distribution).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["ALL_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "corrupt", "frost_texture", "plasma_fractal"]

# the 15 ImageNet-C / CIFAR-10-C benchmark types, in the paper's order (noise, blur, weather, digital)
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
# the 4 held-out (validation) types of the paper
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS

Rng = np.random.Generator

# ---- published parameter tables, one entry per severity 1..5 -------------------------------------------------------
_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std in [0, 1] pixel units
_SHOT_NOISE = (60, 25, 12, 5, 3)  # photons per unit intensity
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of values set to 0 or 1
_SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # std of the multiplicative noise
_GAUSSIAN_BLUR = (1, 2, 3, 4, 6)  # sigma in px
_GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max offset, iterations
_DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, anti-alias sigma
_MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
_ZOOM_BLUR = (
    np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02), np.arange(1, 1.26, 0.02),
    np.arange(1, 1.31, 0.03),
)  # zoom factors averaged
# snow: noise mean, noise std, zoom, threshold, motion radius, motion sigma, weight of the original image
_SNOW = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
_FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # weight of the image, weight of the frost
_FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # fog strength, fractal roughness decay
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor about the per-channel mean
_ELASTIC = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)  # displacement gain alpha
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # downscale factor
_JPEG = (25, 18, 15, 10, 7)  # JPEG quality
# spatter: noise mean, noise std, smoothing sigma, threshold, intensity (water) / mask sigma (mud), mud?
_SPATTER = (
    (0.65, 0.3, 4, 0.69, 0.6, False), (0.65, 0.3, 3, 0.68, 0.6, False), (0.65, 0.3, 2, 0.68, 0.5, False),
    (0.65, 0.3, 1, 0.65, 1.5, True), (0.67, 0.4, 1, 0.65, 1.5, True),
)
_SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV saturation factor, offset

# Mean RGB colour and gray-level std of the frost photographs ImageNet-C blends in (the reference draws one of five
# files, two of which are the same picture), measured once from them; the procedural frost is drawn to these.
_FROST_LOOKS = (
    (78.0, 149.0, 166.0, 18.4), (201.0, 205.0, 214.0, 21.9), (201.0, 205.0, 214.0, 21.9),
    (138.0, 153.0, 165.0, 28.6), (112.0, 123.0, 135.0, 43.4),
)
_LUMA = np.array([0.2989, 0.5870, 0.1140])  # the reference's RGB -> gray weights (frost, spatter on gray images)


# ---- helpers --------------------------------------------------------------------------------------------------------


def _unit_to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8, clipped and truncated like the reference's ``np.uint8(np.clip(x, 0, 1) * 255)``."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """0..255 floats to uint8, clipped and truncated."""
    return np.clip(x, 0, 255).astype(np.uint8)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes only (the reference's scikit-image defaults: nearest border,
    truncate 4)."""
    sigmas = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sigmas, mode="nearest", truncate=4.0)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The central 1/factor of ``x`` scaled up by ``factor`` (bilinear); at least as large as ``x``, not cropped."""
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    return ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor) + (1,) * (x.ndim - 2), order=1)


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Sum of copies of ``x`` shifted along ``angle`` (degrees) by 0..2·radius px, weighted by a one-sided
    Gaussian of std ``sigma``; borders repeat the edge pixel, shifts past the image end the kernel."""
    width = 2 * radius + 1
    steps = np.arange(width)
    weights = np.exp(-(steps**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    weights = weights / weights.sum()
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    h, w = x.shape[:2]
    out = np.zeros(x.shape, dtype=np.float32)
    for i in range(width):
        dy, dx = -math.ceil(i * sin - 0.5), -math.ceil(i * cos - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        out = out + weights[i] * x[rows][:, cols]
    return out


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] to HSV in [0, 1] (Smith's hexcone model, as scikit-image computes it: where several channels
    are maximal, blue's hue formula wins over green's over red's)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    gray = delta == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        saturation = np.where(gray, 0.0, delta / value)
        from_green = np.where(g == value, 2.0 + (b - r) / delta, (g - b) / delta)
        sector = np.where(b == value, 4.0 + (r - g) / delta, from_green)
        hue = np.where(gray, 0.0, (sector / 6.0) % 1.0)
    return np.stack([hue, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] back to RGB in [0, 1] (the inverse hexcone map, sector by sector)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    which = (sector.astype(np.uint8) % 6)[..., None]
    rows = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    return np.select([which == k for k in range(6)], [np.stack(row, axis=-1) for row in rows])


def _next_power_of_two(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


def plasma_fractal(size: int, decay: float, rng: Rng) -> np.ndarray:
    """A periodic ``size`` × ``size`` diamond-square height map scaled to [0, 1] (Fournier et al. 1982), the fog
    layer of ImageNet-C: noise amplitude starts at 100 and is divided by ``decay`` at each halving of the step."""
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma_fractal: size must be a power of two >= 2, got {size}")
    grid = np.zeros((size, size))
    step, amplitude = size, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        # as published: the uniform noise is U(-a, a) scaled by a again
        return total / 4 + amplitude * rng.uniform(-amplitude, amplitude, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        # square step: each cell centre from its four (wrapping) corners
        pair = corners + np.roll(corners, -1, axis=0)
        grid[half::step, half::step] = noisy_mean(pair + np.roll(pair, -1, axis=1))
        # diamond step: each edge midpoint from the two corners and two centres around it
        centres = grid[half::step, half::step]
        top = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        grid[0::step, half::step] = noisy_mean(top)
        left = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        grid[half::step, 0::step] = noisy_mean(left)
        step = half
        amplitude /= decay
    grid -= grid.min()
    return grid / grid.max()


def _line_kernel(radius: int, angle: float) -> np.ndarray:
    """(2r+1)² float32 kernel holding one anti-aliased line of half-length ``radius`` through the centre."""
    size = 2 * radius + 1
    kernel = np.zeros((size, size), dtype=np.uint8)
    dx, dy = radius * math.cos(angle), radius * math.sin(angle)
    fixed = 16  # cv2 fixed-point coordinates (shift 4): sub-pixel end points
    start = (round((radius - dx) * fixed), round((radius - dy) * fixed))
    end = (round((radius + dx) * fixed), round((radius + dy) * fixed))
    cv2.line(kernel, start, end, 255, 1, cv2.LINE_AA, 4)
    return kernel.astype(np.float32) / 255


def _ice_streaks(h: int, w: int, rng: Rng) -> np.ndarray:
    """(h, w) layer of feathery ice needles: sparse crystal seeds drawn out into 25 px streaks whose direction
    follows a smooth random field (a plasma fractal), each with short side branches at 60° (ice's hexagonal habit)."""
    seeds = ((rng.random((h, w)) < 0.04) * rng.uniform(0.2, 1.0, (h, w))).astype(np.float32)
    field = _gaussian(plasma_fractal(_next_power_of_two(max(h, w)), 2.0, rng)[:h, :w], 3.0) * 2 * math.pi
    out = np.zeros((h, w))
    n_directions = 6
    for k in range(n_directions):
        angle = k * math.pi / n_directions
        weight = ((1 + np.cos(2 * (field - angle))) / 2) ** 6  # this direction where the field points along it
        out += weight * cv2.filter2D(seeds, -1, _line_kernel(12, angle))
        out += 0.5 * cv2.filter2D(seeds, -1, _line_kernel(3, angle + math.pi / 3))
    return out


def frost_texture(h: int, w: int, rng: Rng) -> np.ndarray:
    """(h, w, 3) float64 RGB frost layer in 0..255, procedural stand-in for ImageNet-C's frost photographs: ice
    needles over a plasma-fractal shading, with the mean colour and contrast of one of those photographs."""
    r, g, b, contrast = _FROST_LOOKS[int(rng.integers(len(_FROST_LOOKS)))]
    shade = plasma_fractal(_next_power_of_two(max(h, w)), 2.0, rng)[:h, :w]
    texture = _standardise(0.5 * _standardise(shade) + _standardise(_ice_streaks(h, w, rng)))
    return np.clip(np.array([r, g, b]) + contrast * texture[..., None], 0, 255)


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


# ---- the corruptions: (H, W, C) uint8, severity, rng -> (H, W, C) uint8 --------------------------------------------


def _gaussian_noise(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    x = img / 255.0
    return _unit_to_uint8(x + rng.normal(size=x.shape, scale=_GAUSSIAN_NOISE[severity - 1]))


def _shot_noise(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    photons = _SHOT_NOISE[severity - 1]
    return _unit_to_uint8(rng.poisson(img / 255.0 * photons) / float(photons))


def _impulse_noise(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    x = img / 255.0
    hit = rng.random(x.shape) < _IMPULSE_NOISE[severity - 1]
    salt = rng.random(x.shape) < 0.5
    return _unit_to_uint8(np.where(hit, salt.astype(np.float64), x))


def _speckle_noise(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    x = img / 255.0
    return _unit_to_uint8(x + x * rng.normal(size=x.shape, scale=_SPECKLE_NOISE[severity - 1]))


def _gaussian_blur(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    return _unit_to_uint8(_gaussian(img / 255.0, _GAUSSIAN_BLUR[severity - 1]))


def _glass_blur(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    sigma, reach, iterations = _GLASS_BLUR[severity - 1]
    x = _unit_to_uint8(_gaussian(img / 255.0, sigma))
    h, w = x.shape[:2]
    rows, cols = np.arange(h - reach, reach, -1), np.arange(w - reach, reach, -1)
    if rows.size and cols.size:
        # pixel (r, c) takes the current value at (r + dy, c + dx), visited bottom-right to top-left
        offsets = rng.integers(-reach, reach, size=(iterations, rows.size, cols.size, 2))
        dst = (rows[:, None] * w + cols[None, :])[None].repeat(iterations, axis=0)
        src = (rows[None, :, None] + offsets[..., 1]) * w + cols[None, None, :] + offsets[..., 0]
        origin = list(range(h * w))
        for d, s in zip(dst.ravel().tolist(), src.ravel().tolist()):
            origin[d] = origin[s]
        x = x.reshape(h * w, -1)[origin].reshape(x.shape)
    return _unit_to_uint8(_gaussian(x / 255.0, sigma))


def _disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """Normalised disk of ``radius`` px on a grid of at least 17 × 17, softened by a small Gaussian."""
    half = max(8, radius)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    ksize = 3 if radius <= 8 else 5
    return cv2.GaussianBlur(disk, (ksize, ksize), sigmaX=alias_blur)


def _defocus_blur(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    kernel = _disk_kernel(*_DEFOCUS_BLUR[severity - 1])
    x = img / 255.0
    return _unit_to_uint8(np.stack([cv2.filter2D(x[..., k], -1, kernel) for k in range(x.shape[2])], axis=-1))


def _motion_blur_corruption(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    radius, sigma = _MOTION_BLUR[severity - 1]
    return _to_uint8(_motion_blur(img, radius, sigma, rng.uniform(-45, 45)))


def _zoom_blur(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    factors = _ZOOM_BLUR[severity - 1]
    x = (img / 255.0).astype(np.float32)
    h, w = x.shape[:2]
    total = np.zeros_like(x)
    for factor in factors:
        layer = _clipped_zoom(x, factor)[:h, :w]
        total[: layer.shape[0], : layer.shape[1]] += layer
    return _unit_to_uint8((x + total) / (len(factors) + 1))


def _snow(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = _SNOW[severity - 1]
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    flakes = rng.normal(size=(h, w), loc=mean, scale=std)
    flakes = _clipped_zoom(flakes[..., None], zoom)[..., 0]
    flakes[flakes < threshold] = 0
    flakes = _motion_blur(np.clip(flakes, 0, 1), radius, sigma, rng.uniform(-135, -45))
    flakes = (np.round(flakes * 255).astype(np.uint8) / 255.0)[:h, :w, None]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None] if x.shape[2] == 3 else x
    x = keep * x + (1 - keep) * np.maximum(x, gray * 1.5 + 0.5)  # whitened, as under an overcast sky
    return _unit_to_uint8(x + flakes + np.rot90(flakes, k=2))


def _frost(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    keep, amount = _FROST[severity - 1]
    h, w, c = img.shape
    ice = frost_texture(h, w, rng)
    if c == 1:
        ice = (ice @ _LUMA)[..., None]
    return _to_uint8(keep * img.astype(np.float64) + amount * ice)


def _fog(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    strength, decay = _FOG[severity - 1]
    h, w = img.shape[:2]
    x = img / 255.0
    peak = x.max()
    haze = plasma_fractal(_next_power_of_two(max(h, w)), decay, rng)[:h, :w, None]
    return _unit_to_uint8((x + strength * haze) * peak / (peak + strength))


def _brightness(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    x = img / 255.0
    shift = _BRIGHTNESS[severity - 1]
    if x.shape[2] == 1:
        return _unit_to_uint8(x + shift)
    hsv = _rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return _unit_to_uint8(_hsv_to_rgb(hsv))


def _contrast(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    x = img / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return _unit_to_uint8((x - means) * _CONTRAST[severity - 1] + means)


def _saturate(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    if img.shape[2] == 1:
        return img.copy()
    factor, offset = _SATURATE[severity - 1]
    hsv = _rgb_to_hsv(img / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor + offset, 0, 1)
    return _unit_to_uint8(_hsv_to_rgb(hsv))


def _elastic_transform(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    alpha = _ELASTIC[severity - 1]
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    sigma = np.array([h, w]) * 0.01
    reach = h * 0.005  # the reference uses the height for both directions

    def displacement() -> np.ndarray:
        field = rng.uniform(-reach, reach, size=(h, w))
        return (ndimage.gaussian_filter(field, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)

    dx = displacement()
    dy = displacement()
    rows = np.arange(h)[:, None] + dy
    cols = np.arange(w)[None, :] + dx
    warped = [ndimage.map_coordinates(x[..., k], (rows, cols), order=1, mode="reflect") for k in range(x.shape[2])]
    return _unit_to_uint8(np.stack(warped, axis=-1))


def _as_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)


def _pixelate(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    h, w = img.shape[:2]
    factor = _PIXELATE[severity - 1]
    small = _as_pil(img).resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST)).reshape(img.shape)


def _jpeg_compression(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    buffer = io.BytesIO()
    _as_pil(img).save(buffer, "JPEG", quality=_JPEG[severity - 1])
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded).reshape(img.shape)


def _spatter(img: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    mean, std, smooth, threshold, spread, mud = _SPATTER[severity - 1]
    x = img.astype(np.float32) / 255.0
    h, w, c = x.shape
    liquid = _gaussian(rng.normal(size=(h, w), loc=mean, scale=std), smooth)
    liquid[liquid < threshold] = 0
    if not mud:
        # water drops: shaded by an embossed, equalised distance-to-drop-edge map, tinted pale turquoise
        drops = np.clip(liquid * 255, 0, 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(drops, 50, 150), cv2.DIST_L2, 5)
        dist = cv2.blur(np.minimum(dist, 20), (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
        mask = drops * dist
        peak = mask.max()
        mask = (mask / peak * spread if peak > 0 else mask)[..., None]
        tint = np.clip(mask * (np.array([175, 238, 238]) / 255.0).astype(np.float32), 0, 1)
        return _unit_to_uint8(x + ((tint @ _LUMA)[..., None] if c == 1 else tint))
    # mud: opaque brown blotches where the smoothed drop mask is dense
    mask = _gaussian((liquid > threshold).astype(np.float32), spread)
    mask[mask < 0.8] = 0
    brown = (np.array([63, 42, 20]) / 255.0) * mask[..., None]
    return _unit_to_uint8(x * (1 - mask[..., None]) + ((brown @ _LUMA)[..., None] if c == 1 else brown))


_FUNCTIONS: dict[str, Callable[[np.ndarray, int, Rng], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur_corruption,
    "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression, "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur,
    "spatter": _spatter, "saturate": _saturate,
}


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (H, W, C) uint8, C = 1 or 3, under ImageNet-C corruption ``name`` at ``severity`` 1–5
    (Hendrycks & Dietterich 2019); same shape and dtype, every random draw from ``rng``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        found = f"{type(image).__name__}" + (
            f" of shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray) else ""
        )
        raise ValueError(f"corrupt: expected an (H, W, C) uint8 array with C = 1 or 3, got {found}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"corrupt: expected an image of at least 1 × 1 px, got shape {image.shape}")
    if name not in _FUNCTIONS:
        raise ValueError(f"corrupt: unknown corruption {name!r}; expected one of {', '.join(ALL_CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"corrupt: severity must be an integer in 1..5, got {severity!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"corrupt: rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    out = _FUNCTIONS[name](np.ascontiguousarray(image), int(severity), rng)
    if out.shape != image.shape or out.dtype != np.uint8:  # a bug here, not a user error
        raise AssertionError(f"corrupt: {name} returned {out.shape} {out.dtype}, expected {image.shape} uint8")
    return out
