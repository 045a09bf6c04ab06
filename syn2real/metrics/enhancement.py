"""Full-reference scores of enhanced low-light images and the simple baselines they must beat.

- PSNR and SSIM (torchmetrics, data range 1, SSIM with its default 11×11 Gaussian window) per image against the
  clean reference, then mean ± std over images.
- Baselines: the dark input itself; adaptive gamma correction (I^γ with γ = log 0.5 / log μ, μ the image's mean
  luminance, so the mean is mapped to mid-grey); histogram equalisation of the luminance (Y of YCrCb, chroma kept).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from syn2real.data.datasets import load_image, pair_by_name
from syn2real.models.enlighten import LUMA

__all__ = ["BASELINES", "evaluate_folders", "example_figure", "gamma_correction", "histogram_equalization", "image_scores"]


def _unit_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].double() / 255.0


def image_scores(pred: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of an H×W×3 uint8 image against its reference."""
    if pred.shape != reference.shape:
        raise ValueError(f"prediction {pred.shape} and reference {reference.shape} must have the same shape")
    p, r = _unit_tensor(pred), _unit_tensor(reference)
    return (
        float(peak_signal_noise_ratio(p, r, data_range=1.0)),
        float(structural_similarity_index_measure(p, r, data_range=1.0)),
    )


def gamma_correction(image: np.ndarray) -> np.ndarray:
    """I^γ with γ = log 0.5 / log μ (μ: mean luminance in [0, 1]), applied to every channel."""
    unit = image.astype(np.float64) / 255.0
    mean = float((unit @ np.array(LUMA)).mean())
    gamma = np.log(0.5) / np.log(min(max(mean, 1e-4), 0.999))
    return np.clip(np.round(np.power(unit, gamma) * 255.0), 0, 255).astype(np.uint8)


def histogram_equalization(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of the luminance channel (YCrCb), chroma unchanged."""
    ycc = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.equalizeHist(ycc[..., 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "input": lambda image: image,
    "gamma": gamma_correction,
    "histeq": histogram_equalization,
}


def _pairs(low_dir: Path, reference_dir: Path) -> list[tuple[str, Path, Path]]:
    pairs, missing = pair_by_name(low_dir, reference_dir)
    if missing:
        name = missing[0]
        raise FileNotFoundError(
            f"{low_dir / name} has no reference named {Path(name).with_suffix('').as_posix()}.* under {reference_dir}"
        )
    if not pairs:
        raise FileNotFoundError(f"{low_dir} contains no images to evaluate")
    return pairs


def evaluate_folders(
    low_dir: str | Path, reference_dir: str | Path, enhanced: dict[str, str | Path], progress: bool = False
) -> dict[str, Any]:
    """Scores of the baselines and of each folder in ``enhanced`` (name -> folder with the same relative names)
    against the references: ``{method: {psnr_mean, psnr_std, ssim_mean, ssim_std, per_image: {...}}}``; with
    ``progress``, a progress bar over the images."""
    from tqdm.auto import tqdm

    low_dir, reference_dir = Path(low_dir), Path(reference_dir)
    scores: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in [*BASELINES, *enhanced]}
    pairs = _pairs(low_dir, reference_dir)
    for key, low_path, ref_path in tqdm(pairs, desc="scoring", unit="img", disable=not progress):
        low, ref = load_image(low_path, "RGB"), load_image(ref_path, "RGB")
        for name, fn in BASELINES.items():
            scores[name][key] = image_scores(fn(low), ref)
        for name, folder in enhanced.items():
            candidates = [p for p in (Path(folder) / key).parent.glob(Path(key).name + ".*") if p.is_file()]
            if not candidates:
                raise FileNotFoundError(f"{folder} has no enhanced image named {key}.*")
            scores[name][key] = image_scores(load_image(candidates[0], "RGB"), ref)
    out: dict[str, Any] = {}
    for name, per_image in scores.items():
        psnr = np.array([v[0] for v in per_image.values()])
        ssim = np.array([v[1] for v in per_image.values()])
        out[name] = {
            "psnr_mean": float(psnr.mean()), "psnr_std": float(psnr.std()),
            "ssim_mean": float(ssim.mean()), "ssim_std": float(ssim.std()),
            "per_image": {k: {"psnr": v[0], "ssim": v[1]} for k, v in per_image.items()},
        }
    return out


def example_figure(
    low_dir: str | Path, reference_dir: str | Path, enhanced: dict[str, str | Path], path: str | Path,
    max_rows: int = 4, size: int = 160,
) -> Path:
    """A PNG grid, one row per test image: dark input | gamma | hist. eq. | each enhanced folder | reference."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pairs = _pairs(Path(low_dir), Path(reference_dir))[:max_rows]
    columns = ["input", "gamma", "histeq", *enhanced, "reference"]
    fig, axes = plt.subplots(len(pairs), len(columns), figsize=(1.9 * len(columns), 1.9 * len(pairs)), squeeze=False)
    for r, (key, low_path, ref_path) in enumerate(pairs):
        low, ref = load_image(low_path, "RGB"), load_image(ref_path, "RGB")
        images = [BASELINES[c](low) for c in ("input", "gamma", "histeq")]
        for folder in enhanced.values():
            images.append(load_image(next((Path(folder) / key).parent.glob(Path(key).name + ".*")), "RGB"))
        images.append(ref)
        for c, (name, image) in enumerate(zip(columns, images)):
            ax = axes[r][c]
            scale = size / max(image.shape[:2])
            thumb = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            ax.imshow(thumb)
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "reference":
                psnr, _ = image_scores(image, ref)
                ax.set_xlabel(f"{psnr:.1f} dB", fontsize=7)
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
