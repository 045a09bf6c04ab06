"""Full-reference scores of enhanced low-light images and the simple baselines they must beat.

- PSNR and SSIM (torchmetrics, data range 1, SSIM with its default 11×11 Gaussian window) per image against the
  clean reference, then mean ± std over images.
- Baselines: the dark input itself; adaptive gamma correction (I^γ with γ = log 0.5 / log μ, μ the image's mean
  luminance, so the mean is mapped to mid-grey); histogram equalisation of the luminance (Y of YCrCb, chroma kept).

Scoring folders of images against their references is ``syn2real enhance --reference``'s
(:func:`syn2real.enhance.evaluate_folders`).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from syn2real.core.luminance import LUMA

__all__ = ["BASELINES", "gamma_correction", "histogram_equalization", "image_scores"]


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
