"""Unpaired low-light data from any folder of photos, by realistic darkening (``data_prep/lowlight.py``).

Darkening model, applied to sRGB values I in [0, 1] (the low-light synthesis of Lv et al., MBLLEN, with sensor
noise), with per-image parameters drawn from a generator seeded by (seed, file name):

1. tone: L = e · I^γ, γ ~ U(gamma) (default 2–3.5) darkens mid-tones much more than highlights, e ~ U(exposure)
   (default 0.5–0.9) lowers the exposure;
2. shot noise: Poisson(L · k) / k with k ~ U(photons) (default 200–1000 photo-electrons at full scale);
3. read noise: + N(0, σ²), σ ~ U(read_noise) (default 0.002–0.008);
4. 8-bit quantisation.

Layout written under ``output``::

    train/low/<name>.png        darkened training photos      (one half of the training photos)
    train/normal/<name>.png     clean training photos         (the other half: no scene is in both, unpaired)
    test/low/<name>.png         darkened test photos
    test/reference/<name>.png   their clean originals, for PSNR/SSIM only
    manifest.json               the split and every image's darkening parameters

Photos are split into train and test by image (seeded). Every file is written atomically and files already present
are kept, so an interrupted run resumes.

Public unpaired sets need no conversion: EnlightenGAN's training set is ``trainA`` (low) and ``trainB`` (normal)
folders, LOL's evaluation pairs are ``eval15/low`` and ``eval15/high``; give them to
:class:`~syn2real.data.unpaired.UnpairedImageDataModule` as ``low`` / ``normal`` / ``eval_low`` / ``eval_reference``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from syn2real.data.datasets import IMAGE_EXTENSIONS, CorruptImageError, DatasetLayoutError, _list_images, load_image
from syn2real.io import atomic_write, write_json_atomic

__all__ = ["DarkenParams", "PrepareSummary", "collect_package_photos", "darken", "prepare_lowlight", "sample_params"]

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@dataclass(frozen=True)
class DarkenParams:
    """One image's darkening: tone curve ``exposure · I^gamma``, shot-noise photons at full scale, read-noise σ."""

    gamma: float
    exposure: float
    photons: float
    read_noise: float


def sample_params(
    rng: np.random.Generator,
    gamma: Sequence[float] = (2.0, 3.5),
    exposure: Sequence[float] = (0.5, 0.9),
    photons: Sequence[float] = (200.0, 1000.0),
    read_noise: Sequence[float] = (0.002, 0.008),
) -> DarkenParams:
    """Uniform draws from each (low, high) range."""
    return DarkenParams(
        gamma=float(rng.uniform(*gamma)), exposure=float(rng.uniform(*exposure)),
        photons=float(rng.uniform(*photons)), read_noise=float(rng.uniform(*read_noise)),
    )


def darken(image: np.ndarray, params: DarkenParams, rng: np.random.Generator) -> np.ndarray:
    """H×W×C uint8 -> its low-light version (uint8, same shape); see the module docstring."""
    unit = image.astype(np.float64) / 255.0
    low = params.exposure * np.power(unit, params.gamma)
    if params.photons > 0:
        low = rng.poisson(low * params.photons) / params.photons
    if params.read_noise > 0:
        low = low + rng.normal(0.0, params.read_noise, size=low.shape)
    return np.clip(np.round(low * 255.0), 0, 255).astype(np.uint8)


def collect_package_photos(output: str | Path) -> list[Path]:
    """Write the real photos that installed packages ship as PNGs under ``output``: scikit-image's bundled colour
    photos (astronaut, chelsea, coffee, rocket) and foolbox's 20 ImageNet samples. Returns the files."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    import skimage.data

    for name in SKIMAGE_PHOTOS:
        path = out / f"skimage_{name}.png"
        if not path.exists():
            array = getattr(skimage.data, name)()
            atomic_write(path, lambda f, a=array: Image.fromarray(a).convert("RGB").save(f, format="PNG"))
        written.append(path)
    try:
        import foolbox
    except ImportError:
        log.warning("foolbox is not installed: only scikit-image's %d photos are collected", len(SKIMAGE_PHOTOS))
        return written
    data = Path(foolbox.__file__).parent / "data"
    for src in sorted(data.glob("imagenet_*")):
        path = out / f"foolbox_{src.stem}.png"
        if not path.exists():
            array = load_image(src, "RGB")
            atomic_write(path, lambda f, a=array: Image.fromarray(a).save(f, format="PNG"))
        written.append(path)
    return written


@dataclass
class PrepareSummary:
    """What :func:`prepare_lowlight` wrote and kept."""

    written: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    failed: list[str] = field(default_factory=list)


def _image_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def prepare_lowlight(
    input_dir: str | Path,
    output: str | Path,
    test_fraction: float = 0.25,
    seed: int = 0,
    split: str = "disjoint",
    gamma: Sequence[float] = (2.0, 3.5),
    exposure: Sequence[float] = (0.5, 0.9),
    photons: Sequence[float] = (200.0, 1000.0),
    read_noise: Sequence[float] = (0.002, 0.008),
) -> PrepareSummary:
    """Build ``train/{low,normal}`` and ``test/{low,reference}`` from the photos under ``input_dir``.

    ``split``: ``disjoint`` (default) darkens one half of the training photos and keeps the other half clean, so no
    scene appears in both sets; ``shared`` uses every training photo in both (still unpaired for the loader)."""
    root, out = Path(input_dir), Path(output)
    if not root.is_dir():
        raise DatasetLayoutError(f"--input {root} does not exist; expected a folder of photos (any layout)")
    files = _list_images(root, recursive=True)
    if len(files) < 3:
        raise DatasetLayoutError(
            f"{root} has {len(files)} image(s) with extensions {IMAGE_EXTENSIONS}; need at least 3 (train and test)"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test_fraction must be in (0, 1), got {test_fraction}")
    if split not in ("disjoint", "shared"):
        raise ValueError(f"--split must be 'disjoint' or 'shared', got {split!r}")
    for key, rng_ in (("gamma", gamma), ("exposure", exposure), ("photons", photons), ("read_noise", read_noise)):
        if len(rng_) != 2 or rng_[0] > rng_[1] or rng_[0] < 0:
            raise ValueError(f"--{key} must be two numbers low <= high (>= 0), got {list(rng_)}")

    names = [p.relative_to(root).with_suffix("").as_posix().replace("/", "__") for p in files]
    if len(set(names)) != len(names):
        raise DatasetLayoutError(f"{root}: two photos share a name once extensions are dropped; rename them")
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = max(1, int(round(test_fraction * len(files))))
    test_idx, train_idx = sorted(order[:n_test].tolist()), order[n_test:].tolist()
    if split == "disjoint":
        low_idx, normal_idx = sorted(train_idx[0::2]), sorted(train_idx[1::2])
    else:
        low_idx = normal_idx = sorted(train_idx)

    summary = PrepareSummary()
    manifest: dict[str, object] = {
        "input": str(root), "seed": seed, "test_fraction": test_fraction, "split": split,
        "ranges": {"gamma": list(gamma), "exposure": list(exposure), "photons": list(photons), "read_noise": list(read_noise)},
        "images": {},
    }
    jobs = [("train/low", i, True) for i in low_idx] + [("train/normal", i, False) for i in normal_idx]
    jobs += [("test/low", i, True) for i in test_idx] + [("test/reference", i, False) for i in test_idx]
    for folder, i, dark in jobs:
        name = names[i]
        dst = out / folder / f"{name}.png"
        rng = _image_rng(seed, name)
        params = sample_params(rng, gamma, exposure, photons, read_noise)
        if dark:
            manifest["images"][f"{folder}/{name}.png"] = {"source": files[i].relative_to(root).as_posix(), **params.__dict__}  # type: ignore[index]
        else:
            manifest["images"][f"{folder}/{name}.png"] = {"source": files[i].relative_to(root).as_posix()}  # type: ignore[index]
        if dst.exists():
            summary.kept += 1
            continue
        try:
            image = load_image(files[i], "RGB")
        except CorruptImageError as err:
            log.error("%s", err)
            summary.failed.append(files[i].relative_to(root).as_posix())
            continue
        array = darken(image, params, rng) if dark else image
        atomic_write(dst, lambda f, a=array: Image.fromarray(a).save(f, format="PNG"))
        summary.written[folder] = summary.written.get(folder, 0) + 1
    manifest["counts"] = {
        "train/low": len(low_idx), "train/normal": len(normal_idx), "test/low": len(test_idx), "test/reference": len(test_idx),
    }
    manifest["failed"] = sorted(set(summary.failed))
    write_json_atomic(manifest, out / "manifest.json")
    return summary
