"""``syn2real robustness --config CFG --ckpt CKPT``: the robustness report card of a trained classifier.

On a labelled evaluation set of the config's data module (``--domain``, default ``target``) it measures:

- clean accuracy, NLL and ECE;
- FGSM and PGD (L∞, random start) accuracy at several ε in [0, 1] pixel units (``--eps``);
- APGD-CE and APGD-DLR (Croce & Hein 2020, ``--apgd_iters`` iterations, 0 to skip) at the same ε, and the
  **worst-case robust accuracy**: an image counts as robust only if it is classified correctly clean and under every
  attack at that ε (FGSM, PGD, APGD-CE, APGD-DLR), the number to quote (PGD alone over-estimates robustness);
- random noise: accuracy under additive Gaussian pixel noise of std σ (``--noise``), clipped to the image range;
- spatial robustness (Engstrom et al.): accuracy under a random rotation + translation, under worst-of-10 and under
  the exhaustive grid (5 × 5 translations × 31 rotations by default);
- common corruptions (Hendrycks & Dietterich; ``syn2real.data.corruptions`` with ImageNet-C's parameter tables):
  accuracy per type and severity 1–5, a type that fails is reported as unavailable with the reason; images
  under 32 px are resized to 32 px for the corruption and back (the parameters are in pixels of ImageNet-sized
  images; 32 px is also the reference package's minimum); corrupted sets are cached under
  ``$SYN2REAL_CACHE/corruptions`` so several checkpoints see the same corrupted images;
- uncertainty per condition (clean, each attack, noise level, spatial attack and corruption severity): accuracy,
  NLL, Brier score, ECE and the AUROC of confidence for correct vs wrong (``syn2real.metrics.uncertainty``), and the
  members' disagreement for an ensemble or MC dropout (section ``uncertainty``, a second table);
- calibration: a seeded half of the set fits a temperature (Guo et al.), ECE, NLL and Brier before / after are
  reported on the other half, with a reliability diagram PNG. Fitted on the target this uses target labels: an
  oracle, labelled so (``oracle: true``). The label-honest temperature, fitted on the source validation set, is
  reported beside it on the same half (``source_fitted``).

Several ``--ckpt`` evaluate a deep ensemble (the mean of the members' softmax outputs), ``--mc_dropout T`` T dropout
passes averaged (``syn2real.models.ensemble``); attacks then attack the averaged predictor.

Outputs (``--output``, default ``<run>/robustness`` for a checkpoint ``<run>/checkpoints/*.ckpt`` (an ensemble:
``<common parent of the members' runs>/ensemble/robustness``), or ``<run>/robustness-<time>`` when that holds an
earlier report; an ``--output`` holding one is refused): ``robustness.json``,
``reliability.png``, a table in the terminal, and W&B tables + the diagram in an offline run (``--no_wandb`` to
skip). Extra arguments are config overrides, as for ``syn2real fit``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial import APGD, FGSM, PGD, RandomSpatial, WorstOfK, grid_attack, worst_case_correct
from syn2real.adversarial.base import pixel_stats
from syn2real.adversarial.spatial import spatial_grid
from syn2real.commands.ensemble import ensemble_root, run_of
from syn2real.commands.loading import load_trained
from syn2real.data.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt
from syn2real.data.transforms import normalize_stats
from syn2real.io import atomic_write, cache_root, write_json_atomic
from syn2real.metrics.calibration import (
    calibration_error,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
)
from syn2real.metrics.uncertainty import auroc, brier_score, negative_log_likelihood
from syn2real.models.ensemble import EnsembleClassifier, MCDropout
from syn2real.run_dir import RunDirectoryError, report_dir

__all__ = ["CORRUPTIONS", "corrupt_batch", "evaluate_robustness", "main", "normalization_of", "TemperatureScaled"]

logger = logging.getLogger("syn2real.robustness")

# CORRUPTIONS: the 15 ImageNet-C / CIFAR-10-C types, the report card's default set
_CACHE_VERSION = "corruptions-v2"  # v2: syn2real.data.corruptions with a numpy Generator (v1: imagecorruptions)
_IMPLEMENTATION = "syn2real.data.corruptions (ImageNet-C parameters)"
_MIN_SIDE = 32


# --------------------------------------------------------------------------------------------------
# Corruptions
# --------------------------------------------------------------------------------------------------


def _corrupt_one(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One (H, W, C) uint8 image through ``syn2real.data.corruptions.corrupt``; gray stays gray, size is kept
    (images under 32 px are corrupted at 32 px and resized back)."""
    from PIL import Image

    h, w, c = image.shape
    small = min(h, w) < _MIN_SIDE
    if not small:
        return corrupt(image, name, severity, rng)
    scale = _MIN_SIDE / min(h, w)
    size = (max(_MIN_SIDE, round(w * scale)), max(_MIN_SIDE, round(h * scale)))
    src = image[..., 0] if c == 1 else image
    big = np.asarray(Image.fromarray(src).resize(size, Image.BILINEAR)).reshape(size[1], size[0], c)
    out = corrupt(big, name, severity, rng)
    out = np.asarray(Image.fromarray(out[..., 0] if c == 1 else out).resize((w, h), Image.BILINEAR))
    return out.reshape(h, w, c)


def corrupt_batch(
    pixels: np.ndarray, name: str, severities: Sequence[int], seed: int = 0, cache: bool = True
) -> dict[int, np.ndarray]:
    """``pixels`` (B, H, W, C) uint8 under corruption ``name`` at each severity: ``{severity: (B, H, W, C) uint8}``.

    A numpy Generator seeded from (seed, name, severity) draws every image's randomness in turn, so results are
    reproducible; with ``cache`` they are stored under ``$SYN2REAL_CACHE/corruptions`` keyed by the images' bytes."""
    key = hashlib.sha1(
        pixels.tobytes() + f"{pixels.shape}|{name}|{list(severities)}|{seed}|{_CACHE_VERSION}".encode()
    ).hexdigest()
    path = cache_root() / "corruptions" / f"{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as stored:
                return {s: stored[f"s{s}"] for s in severities}
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            logger.warning("corruption cache %s unreadable; recomputing", path)
    out: dict[int, np.ndarray] = {}
    for severity in severities:
        rng = np.random.default_rng((seed * 1_000_003 + zlib.crc32(name.encode()) + 7919 * severity) % 2**32)
        out[severity] = np.stack([_corrupt_one(img, name, severity, rng) for img in pixels])
    if cache:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{f"s{s}": v for s, v in out.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return out


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def normalization_of(spec: Sequence[dict[str, Any]] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the ``Normalize`` step of an evaluation transform spec, in [0, 1] pixel units."""
    stats = normalize_stats(spec)
    if stats is None:
        raise ValueError(
            "the evaluation transforms have no Normalize step; the report card needs the data's mean/std to put "
            "attacks and corruptions in pixel space (add {name: Normalize, mean: [...], std: [...]} to "
            "data.eval_transforms)"
        )
    return stats


class _Counter:
    """Accuracy per condition, and for conditions measured from logits four numbers per sample (confidence,
    correctness, NLL, Brier; the disagreement of an ensemble / MC dropout predictor) for the uncertainty scores."""

    def __init__(self) -> None:
        self.correct: dict[str, float] = {}
        self.total: dict[str, int] = {}
        self.samples: dict[str, dict[str, list[torch.Tensor]]] = {}

    def add(self, key: str, correct: torch.Tensor) -> None:
        self.correct[key] = self.correct.get(key, 0.0) + float(correct.sum())
        self.total[key] = self.total.get(key, 0) + int(correct.numel())

    def add_logits(self, key: str, logits: torch.Tensor, y: torch.Tensor,
                   disagreement: torch.Tensor | None = None) -> None:
        logits = logits.detach().float()
        probs = logits.softmax(1)
        conf = probs.max(1).values
        pred = logits.argmax(1)  # the accuracy as before: argmax of the logits (softmax rounding can tie)
        self.add(key, pred == y)
        per_sample = {
            "confidence": conf, "correct": pred == y,
            "nll": negative_log_likelihood(logits, y, reduction="none"),
            "brier": brier_score(probs, y, reduction="none"),
        }
        if disagreement is not None and disagreement.shape == y.shape:
            per_sample["disagreement"] = disagreement
        store = self.samples.setdefault(key, {})
        for name, value in per_sample.items():
            store.setdefault(name, []).append(value.detach().cpu())

    def acc(self, key: str) -> float:
        return self.correct[key] / max(1, self.total[key])

    def scores(self, key: str, n_bins: int) -> dict[str, float | None]:
        """Accuracy, NLL, Brier, ECE and AUROC of confidence (correct vs wrong) of one condition
        (:mod:`syn2real.metrics.uncertainty`), plus the mean disagreement of an ensemble / MC dropout."""
        s = {name: torch.cat(values) for name, values in self.samples[key].items()}
        out = {
            "acc": self.acc(key),
            "nll": float(s["nll"].mean()),
            "brier": float(s["brier"].mean()),
            "ece": float(calibration_error(s["confidence"], s["correct"], n_bins)),
            "auroc_correct": float(auroc(s["confidence"], s["correct"])),
        }
        if math.isnan(out["auroc_correct"]):  # every prediction correct, or every one wrong: undefined, JSON null
            out["auroc_correct"] = None
        if "disagreement" in s:
            out["disagreement"] = float(s["disagreement"].mean())
        return out


def evaluate_robustness(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | Sequence[tuple[torch.Tensor, torch.Tensor]],
    mean: Sequence[float],
    std: Sequence[float],
    eps: Sequence[float] = (0.1, 0.2, 0.3),
    pgd_steps: int = 40,
    pgd_step_size: float | None = None,
    max_angle: float = 30.0,
    max_shift: float = 3.0,
    noise: Sequence[float] = (0.1, 0.3, 0.5),
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    max_images: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    n_bins: int = 15,
    diagram: str | os.PathLike | None = None,
    progress: bool = True,
    apgd_iters: int = 100,
    apgd_restarts: int = 1,
    source_batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | Sequence[tuple[torch.Tensor, torch.Tensor]]
    | None = None,
    domain: str = "target",
) -> dict[str, Any]:
    """The report card of ``model`` on labelled ``batches`` of normalised images (see the module docstring).

    ``pgd_step_size`` defaults to 2.5 ε / steps (Madry et al.'s rule); ``apgd_iters = 0`` leaves APGD (and the
    worst case over it) out. ``source_batches`` (the source validation set, clean) fits the label-honest temperature
    reported beside the one fitted on ``batches`` (``domain``; an oracle unless ``domain`` is ``source``). Returns the
    JSON-able report."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = model.to(device).eval()
    counter = _Counter()
    unavailable: dict[str, str] = {}
    attack_settings = _LinfAttackSettings(mean, std, pgd_steps, pgd_step_size, apgd_iters, apgd_restarts)
    logits_all, labels_all = [], []
    angles, shifts = spatial_grid(max_angle=max_angle, max_shift=max_shift)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 (or None for the whole set), got {max_images}")
    spatial = max_angle > 0 or max_shift > 0
    # one progress step per piece of work on a batch, counted when it is done
    steps_per_batch = 1 + len(eps) + (1 if noise else 0) + (1 if spatial else 0) + len(corruptions)
    try:
        n_batches: int | None = len(batches)  # type: ignore[arg-type]
    except TypeError:  # a plain iterator
        n_batches = None
    seen = 0
    bar = tqdm(total=None if n_batches is None else n_batches * steps_per_batch, desc="robustness", unit="step",
               disable=not progress)
    try:
        for x, y in batches:
            if max_images is not None:
                if seen == 0 and n_batches is not None:  # the batches this run will actually see
                    n_batches = min(n_batches, math.ceil(max_images / max(1, x.shape[0])))
                    bar.total = n_batches * steps_per_batch
                    bar.refresh()
                x, y = x[: max_images - seen], y[: max_images - seen]
            seen += x.shape[0]
            _evaluate_batch(
                model, x.to(device).float(), y.to(device), counter, unavailable, logits_all, labels_all, mean, std,
                eps, attack_settings, noise, spatial, max_angle, max_shift, angles, shifts, corruptions,
                severities, seed, lambda: bar.update(1),
            )
            bar.set_postfix(images=seen, clean=f"{100 * counter.acc('clean'):.1f}%")
            if max_images is not None and seen >= max_images:
                break
        bar.total = bar.n  # the bar ends full: its total is the steps done, whatever the loader's length said
        bar.refresh()
    finally:
        bar.close()
    if seen == 0:
        raise ValueError("the evaluation set is empty")

    logits = torch.cat(logits_all)
    labels = torch.cat(labels_all)
    probs = logits.softmax(1)
    report: dict[str, Any] = {
        "n_images": seen,
        "normalization": {"mean": list(mean), "std": list(std)},
        "clean": {
            "acc": counter.acc("clean"),
            "nll": float(F.cross_entropy(logits, labels)),
            "ece": float(expected_calibration_error(probs, labels, n_bins)),
        },
    }
    if eps:
        step_note = "2.5 * eps / steps" if pgd_step_size is None else pgd_step_size
        report["fgsm"] = {f"{e:g}": counter.acc(f"fgsm/{e:g}") for e in eps}
        report["pgd"] = {
            "steps": pgd_steps, "step_size": step_note, "random_start": True, "norm": "linf",
            "acc": {f"{e:g}": counter.acc(f"pgd/{e:g}") for e in eps},
        }
        report.update(_linf_report(counter, eps, attack_settings))
    if noise:
        report["noise"] = {f"{sigma:g}": counter.acc(f"noise/{sigma:g}") for sigma in noise}
    if spatial:
        report["spatial"] = {
            "max_angle": max_angle, "max_shift": max_shift, "grid_size": int(angles.shape[0]),
            "random_acc": counter.acc("spatial/random"),
            "worst_of_10_acc": counter.acc("spatial/worst_of_10"),
            "grid_acc": counter.acc("spatial/grid"),
        }
    if corruptions:
        table = {
            name: {str(s): counter.acc(f"corruption/{name}/{s}") for s in severities}
            for name in corruptions if name not in unavailable
        }
        means = {name: float(np.mean(list(v.values()))) for name, v in table.items()}
        report["corruptions"] = {
            "implementation": _corruptions_implementation(),
            "severities": list(severities),
            "acc": table,
            "mean_acc_per_type": means,
            "mean_acc": float(np.mean(list(means.values()))) if means else math.nan,
            "unavailable": unavailable,
        }
    conditions = [key for key in counter.samples]  # in the order measured: clean, attacks, noise, spatial, corruptions
    report["uncertainty"] = {
        "n_bins": n_bins,
        "conventions": "nll: mean -log p(y); brier: mean over samples of the sum over classes of (p_c - onehot_c)^2; "
                       "auroc_correct: AUROC of max-softmax confidence for correct vs wrong (ties 1/2, null when all "
                       "are correct or all wrong); disagreement (ensembles, MC dropout): mean KL of members to the "
                       "mean, nats",
        "conditions": {key: counter.scores(key, n_bins) for key in conditions},
    }
    if corruptions and report["corruptions"]["acc"]:  # Ovadia et al.'s view: every score against severity
        report["uncertainty"]["corruption_severity"] = {
            str(sev): {
                metric: _nanmean([report["uncertainty"]["conditions"][f"corruption/{name}/{sev}"][metric]
                                  for name in report["corruptions"]["acc"]])
                for metric in ("acc", "nll", "brier", "ece", "auroc_correct")
            }
            for sev in severities
        }
    source = None
    if source_batches is not None:
        source = _clean_logits(model, source_batches, max_images, device)
    report["calibration"] = _calibration(logits, labels, seed, n_bins, diagram, source=source, domain=domain)
    return report


def _nanmean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values (an undefined AUROC, ``None``, is left out); ``None`` when there are none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def _clean_logits(
    model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | Sequence[tuple[torch.Tensor, torch.Tensor]],
    max_images: int | None, device: str | torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of the first ``max_images`` images of labelled ``batches`` (all when ``None``), on the CPU."""
    logits_all, labels_all, seen = [], [], 0
    for x, y in batches:
        if max_images is not None:
            x, y = x[: max_images - seen], y[: max_images - seen]
        with torch.no_grad():
            logits_all.append(model(x.to(device).float()).float().cpu())
        labels_all.append(y.cpu())
        seen += x.shape[0]
        if max_images is not None and seen >= max_images:
            break
    if not logits_all:
        raise ValueError("the source evaluation set (temperature fitted on the source) is empty")
    return torch.cat(logits_all), torch.cat(labels_all)


def _evaluate_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, counter: _Counter, unavailable: dict[str, str],
    logits_all: list[torch.Tensor], labels_all: list[torch.Tensor], mean: Sequence[float], std: Sequence[float],
    eps: Sequence[float], attack_settings: _LinfAttackSettings, noise: Sequence[float], spatial: bool,
    max_angle: float, max_shift: float, angles: torch.Tensor, shifts: torch.Tensor, corruptions: Sequence[str],
    severities: Sequence[int], seed: int, step_done: Callable[[], None],
) -> None:
    """Every measurement of the card on one batch, into ``counter``; ``step_done()`` after each piece of work
    (clean, each ε, noise, spatial, each corruption type)."""
    if y.ndim != 1:
        raise ValueError(f"the report card is for classification: labels of shape (B,), got {tuple(y.shape)}")

    def measure(key: str, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = model(inputs)
        counter.add_logits(key, out, y, getattr(model, "last_disagreement", None))
        return out

    logits = measure("clean", x)
    logits_all.append(logits.float().cpu())
    labels_all.append(y.cpu())
    step_done()
    mean_t, std_t = pixel_stats(x, mean, std)
    pixels = (x * std_t + mean_t).clamp(0, 1)
    for e in eps:
        results = linf_attack_correct(model, x, y, e, attack_settings, logits, measure)
        counter.add(f"worst_case/{e:g}", results["worst_case"])
        step_done()
    if noise:
        for sigma in noise:
            noisy = (pixels + sigma * torch.randn_like(pixels)).clamp(0, 1)
            measure(f"noise/{sigma:g}", (noisy - mean_t) / std_t)
        step_done()
    if spatial:
        rand, _ = RandomSpatial(max_angle, max_shift, mean, std)(model, x, y)
        worst, _ = WorstOfK(10, max_angle, max_shift, mean, std)(model, x, y)
        measure("spatial/random", rand)
        measure("spatial/worst_of_10", worst)
        counter.add("spatial/grid", grid_attack(model, x, y, angles, shifts, mean, std, early_stop=True)["correct"])
        step_done()
    if corruptions:
        pixels_np = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        for name in corruptions:
            if name not in unavailable:
                try:
                    corrupted = corrupt_batch(pixels_np, name, severities, seed)
                except Exception as err:  # noqa: BLE001 - one failing type must not end the whole card
                    unavailable[name] = f"{type(err).__name__}: {err}"
                    corrupted = {}
                for severity, images in corrupted.items():
                    xc = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
                    xc = (xc.to(x.device) - mean_t) / std_t
                    measure(f"corruption/{name}/{severity}", xc)
            step_done()


# --------------------------------------------------------------------------------------------------
# L∞ attacks at one ε: FGSM, PGD, APGD-CE, APGD-DLR and the per-image worst case over them
# --------------------------------------------------------------------------------------------------


class _LinfAttackSettings:
    """What the card's L∞ attacks need besides ε (the data's normalisation, PGD's steps, APGD's iterations)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], pgd_steps: int, pgd_step_size: float | None,
                 apgd_iters: int, apgd_restarts: int) -> None:
        if apgd_iters < 0 or apgd_restarts < 1:
            raise ValueError(f"apgd_iters must be >= 0 (0: no APGD) and apgd_restarts >= 1, got {apgd_iters}, "
                             f"{apgd_restarts}")
        self.mean, self.std = mean, std
        self.pgd_steps, self.pgd_step_size = pgd_steps, pgd_step_size
        self.apgd_iters, self.apgd_restarts = apgd_iters, apgd_restarts
        self.unavailable: dict[str, str] = {}  # attack -> why it was not run

    def attacks(self, e: float, num_classes: int) -> dict[str, Any]:
        """The attacks at ε ``e`` by report key; APGD-DLR only for 3 classes or more (its loss needs them)."""
        step = self.pgd_step_size if self.pgd_step_size is not None else 2.5 * e / self.pgd_steps
        out: dict[str, Any] = {
            "fgsm": FGSM(e, mean=self.mean, std=self.std),
            "pgd": PGD(e, step, self.pgd_steps, "linf", True, self.mean, self.std),
        }
        if self.apgd_iters > 0:
            out["apgd_ce"] = APGD(e, "ce", self.apgd_iters, self.apgd_restarts, mean=self.mean, std=self.std)
            if num_classes >= 3:
                out["apgd_dlr"] = APGD(e, "dlr", self.apgd_iters, self.apgd_restarts, mean=self.mean, std=self.std)
            else:
                self.unavailable["apgd_dlr"] = f"the DLR loss needs >= 3 classes, the model has {num_classes}"
        return out


def linf_attack_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: float, settings: _LinfAttackSettings,
    clean_logits: torch.Tensor, measure: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per image and attack, whether the model still classifies the attacked image correctly, plus
    ``worst_case``: correct clean (``clean_logits``) and under every attack (the per-image AND). ``measure(key,
    images)`` (the card's recorder: accuracy and uncertainty scores under ``<attack>/<eps>``) returns the logits of
    each attacked batch; without it the model is simply run."""
    out: dict[str, torch.Tensor] = {}
    for name, attack in settings.attacks(e, int(clean_logits.shape[1])).items():
        adv = attack.perturb(model, x, y)
        if measure is not None:
            logits = measure(f"{name}/{e:g}", adv)
        else:
            with torch.no_grad():
                logits = model(adv)
        out[name] = logits.argmax(1) == y
    out["worst_case"] = worst_case_correct([clean_logits.argmax(1) == y, *out.values()])
    return out


def _linf_report(counter: _Counter, eps: Sequence[float], settings: _LinfAttackSettings) -> dict[str, Any]:
    """The card's ``apgd`` and ``worst_case`` sections."""
    keys = {"apgd_ce": "ce", "apgd_dlr": "dlr"}
    attacks = ["fgsm", "pgd"]
    out: dict[str, Any] = {}
    if settings.apgd_iters > 0:
        done = [k for k in keys if f"{k}/{eps[0]:g}" in counter.total]
        attacks += done
        out["apgd"] = {
            "iterations": settings.apgd_iters, "restarts": settings.apgd_restarts, "norm": "linf", "rho": 0.75,
            "momentum": 0.75, "initial_step": "2 * eps",
            "acc": {keys[k]: {f"{e:g}": counter.acc(f"{k}/{e:g}") for e in eps} for k in done},
            "unavailable": dict(settings.unavailable),
        }
    out["worst_case"] = {
        "attacks": ["clean", *attacks],
        "acc": {f"{e:g}": counter.acc(f"worst_case/{e:g}") for e in eps},
    }
    return out


def _corruptions_implementation() -> str:
    """What produced the corrupted images, for the report."""
    return _IMPLEMENTATION


def _calibration(
    logits: torch.Tensor, labels: torch.Tensor, seed: int, n_bins: int, diagram: str | os.PathLike | None,
    source: tuple[torch.Tensor, torch.Tensor] | None = None, domain: str = "target",
) -> dict[str, Any]:
    """Temperature fitted on a seeded half of the evaluated set, ECE/NLL/Brier before and after on the other half
    (+ the diagram). Fitting on the evaluated set uses its labels: for the target that is an oracle (``oracle``).
    ``source`` (logits, labels of the source validation set) fits the label-honest temperature, evaluated on the
    same held-out half (``source_fitted``)."""
    n = logits.shape[0]
    if n < 4:
        return {"note": f"only {n} images: too few to fit and evaluate a temperature"}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit, held = order[: n // 2], order[n // 2:]
    temperature = fit_temperature(logits[fit], labels[fit])
    before, after = logits[held].softmax(1), (logits[held] / temperature).softmax(1)
    out: dict[str, Any] = {
        "temperature": temperature,
        "n_fit": int(fit.numel()),
        "n_eval": int(held.numel()),
        "n_bins": n_bins,
        "ece_before": float(expected_calibration_error(before, labels[held], n_bins)),
        "ece_after": float(expected_calibration_error(after, labels[held], n_bins)),
        "nll_before": float(F.cross_entropy(logits[held], labels[held])),
        "nll_after": float(F.cross_entropy(logits[held] / temperature, labels[held])),
        "brier_before": float(brier_score(before, labels[held])),
        "brier_after": float(brier_score(after, labels[held])),
        "fitted_on": f"a seeded half of the evaluated set ({domain}), with its labels",
        "oracle": domain != "source",
    }
    panels = {"before": (before, labels[held]),
              f"{'oracle: ' if out['oracle'] else ''}T = {temperature:.2f} ({domain})": (after, labels[held])}
    if source is not None and source[0].shape[0] >= 2:
        t_source = fit_temperature(*source)
        scaled = logits[held] / t_source
        out["source_fitted"] = {
            "temperature": t_source,
            "n_fit": int(source[0].shape[0]),
            "fitted_on": "the source validation set (label-honest: no target label is used)",
            "ece_after": float(expected_calibration_error(scaled.softmax(1), labels[held], n_bins)),
            "nll_after": float(F.cross_entropy(scaled, labels[held])),
            "brier_after": float(brier_score(scaled.softmax(1), labels[held])),
        }
        panels[f"T = {t_source:.2f} (source val)"] = (scaled.softmax(1), labels[held])
    if diagram is not None:
        plot_reliability(panels, str(diagram), n_bins)
        out["diagram"] = Path(diagram).name
    return out


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def report_rows(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(section, setting, value) rows of the card, accuracies and ECE in [0, 1]."""
    rows: list[tuple[str, str, float]] = [
        ("clean", "accuracy", report["clean"]["acc"]),
        ("clean", "ECE", report["clean"]["ece"]),
    ]
    for e, acc in report.get("fgsm", {}).items():
        rows.append(("FGSM", f"eps {e}", acc))
    if "pgd" in report:
        for e, acc in report["pgd"]["acc"].items():
            rows.append((f"PGD-{report['pgd']['steps']}", f"eps {e}", acc))
    for loss, table in report.get("apgd", {}).get("acc", {}).items():
        for e, acc in table.items():
            rows.append((f"APGD-{loss.upper()}-{report['apgd']['iterations']}", f"eps {e}", acc))
    for e, acc in report.get("worst_case", {}).get("acc", {}).items():
        rows.append(("worst case (per image, all attacks)", f"eps {e}", acc))
    for sigma, acc in report.get("noise", {}).items():
        rows.append(("Gaussian noise", f"sigma {sigma}", acc))
    if "spatial" in report:
        sp = report["spatial"]
        rows += [
            ("spatial", f"random (±{sp['max_angle']:g}°, ±{sp['max_shift']:g} px)", sp["random_acc"]),
            ("spatial", "worst-of-10", sp["worst_of_10_acc"]),
            ("spatial", f"grid ({sp['grid_size']})", sp["grid_acc"]),
        ]
    if "corruptions" in report:
        for name, acc in report["corruptions"]["mean_acc_per_type"].items():
            rows.append(("corruption", f"{name} (mean of severities)", acc))
        rows.append(("corruption", "mean over types", report["corruptions"]["mean_acc"]))
    cal = report["calibration"]
    if "temperature" in cal:
        oracle = "oracle: " if cal.get("oracle", False) else ""
        rows += [
            ("calibration", "ECE before temperature", cal["ece_before"]),
            ("calibration", f"ECE after ({oracle}T = {cal['temperature']:.2f} fitted on {report.get('domain', 'it')})",
             cal["ece_after"]),
        ]
        if "source_fitted" in cal:
            rows.append(("calibration", f"ECE after (T = {cal['source_fitted']['temperature']:.2f} fitted on source "
                                        "val, label-honest)", cal["source_fitted"]["ece_after"]))
    return rows


UNCERTAINTY_COLUMNS = ("acc", "nll", "brier", "ece", "auroc_correct", "disagreement")


def uncertainty_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(condition, scores) rows of the uncertainty table: every condition but the single corruptions, which are
    summarised per severity (mean over types)."""
    section = report.get("uncertainty", {})
    rows = [(key, v) for key, v in section.get("conditions", {}).items() if not key.startswith("corruption/")]
    rows += [(f"corruptions, severity {sev}", v) for sev, v in section.get("corruption_severity", {}).items()]
    return rows


def print_report(report: dict[str, Any], title: str) -> None:
    """The card as a rich table (plain text when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("section", "setting", "value (%)"):
        table.add_column(column)
    for section, setting, value in report_rows(report):
        table.add_row(section, setting, f"{100 * value:.2f}")
    Console().print(table)
    rows = uncertainty_rows(report)
    if rows:
        columns = [c for c in UNCERTAINTY_COLUMNS if any(c in v for _, v in rows)]
        table = Table(title="uncertainty per condition (acc, ECE in %; NLL, Brier, disagreement in nats / units; "
                            "AUROC of confidence for correct vs wrong)")
        for column in ("condition", *columns):
            table.add_column(column)
        for key, values in rows:
            cells = []
            for c in columns:
                v = values.get(c)
                scale = 100 if c in ("acc", "ece") else 1
                cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{scale * v:.{2 if scale == 100 else 4}f}")
            table.add_row(key, *cells)
        Console().print(table)
    if report.get("corruptions", {}).get("unavailable"):
        Console().print(f"corruptions unavailable here: {', '.join(report['corruptions']['unavailable'])}")


def log_wandb(report: dict[str, Any], out_dir: Path, project: str, name: str) -> None:
    """Tables (card, corruptions per severity) and the reliability diagram into an offline W&B run in
    ``out_dir`` (online when ``WANDB_MODE=online``); never fails the command."""
    from syn2real.loggers import SafeWandbLogger

    run = SafeWandbLogger(project=project, name=name, save_dir=str(out_dir))
    rows = report_rows(report)
    run.log_metrics({f"robustness/{s}/{k}": v for s, k, v in rows})
    run.log_table("robustness/card", ["section", "setting", "value"], [list(r) for r in rows])
    urows = uncertainty_rows(report)
    if urows:
        run.log_table("robustness/uncertainty", ["condition", *UNCERTAINTY_COLUMNS],
                      [[key, *[v.get(c) for c in UNCERTAINTY_COLUMNS]] for key, v in urows])
    if "corruptions" in report:
        sev = report["corruptions"]["severities"]
        data = [[n, *[v[str(s)] for s in sev]] for n, v in report["corruptions"]["acc"].items()]
        run.log_table("robustness/corruptions", ["corruption", *[f"severity {s}" for s in sev]], data)
    diagram = report["calibration"].get("diagram")
    if diagram:
        from PIL import Image

        run.log_image("robustness/reliability", [Image.open(out_dir / diagram)])
    run.finalize("success")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syn2real robustness",
        description="Robustness report card of a trained classifier: clean, FGSM/PGD, spatial, corruptions, ECE. "
        "Unknown arguments are config overrides (e.g. --data.init_args.eval_batch_size 256).",
    )
    p.add_argument("--config", required=True, action="append", help="the run's config file (as for fit)")
    p.add_argument("--ckpt", required=True, action="extend", nargs="+",
                   help="checkpoint of the trained method (.ckpt); several (--ckpt A B or --ckpt A --ckpt B): a deep "
                   "ensemble, the mean of their softmax outputs (same network, the first one's config)")
    p.add_argument("--mc_dropout", type=int, default=0, help="T > 0: MC dropout, T passes with dropout on, averaged "
                   "(the network needs a dropout layer, e.g. task.init_args.network.dropout)")
    p.add_argument("--output", default=None, help="output folder, refused if it holds a report already (default "
                   "<run>/robustness beside <run>/checkpoints, <run>/robustness-<time> when that holds one)")
    p.add_argument("--temperature", choices=["none", "source"], default="none",
                   help="source: fit a temperature on the clean source validation set first and score every "
                   "condition with the scaled predictor (label-honest temperature scaling under shift)")
    p.add_argument("--domain", default="target", help="evaluation domain of the data module (target or source)")
    p.add_argument("--eps", type=float, nargs="*", default=[0.1, 0.2, 0.3], help="L-inf budgets in [0, 1] pixels")
    p.add_argument("--pgd_steps", type=int, default=40)
    p.add_argument("--pgd_step_size", type=float, default=None, help="default 2.5 * eps / steps")
    p.add_argument("--apgd_iters", type=int, default=100, help="APGD-CE / APGD-DLR iterations (0: no APGD)")
    p.add_argument("--apgd_restarts", type=int, default=1, help="APGD random restarts")
    p.add_argument("--max_angle", type=float, default=30.0, help="spatial: rotation range ± degrees")
    p.add_argument("--max_shift", type=float, default=3.0, help="spatial: translation range ± pixels")
    p.add_argument("--noise", type=float, nargs="*", default=[0.1, 0.3, 0.5], help="Gaussian pixel-noise stds")
    p.add_argument("--corruptions", nargs="*", default=list(CORRUPTIONS), help="types, or none")
    p.add_argument("--severities", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    p.add_argument("--max_images", type=int, default=None,
                   help="evaluate N images drawn at random (seeded by --seed; the same N for every predictor) from "
                   "the evaluation set and from the source validation set, in their order; all when not given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no_wandb", action="store_true", help="do not write a W&B run")
    return p


class TemperatureScaled(nn.Module):
    """``model``'s logits divided by a fixed temperature (Guo et al. 2017): the same predictions, softer (T > 1) or
    sharper probabilities; an ensemble's or MC dropout's disagreement passes through."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature

    @property
    def last_disagreement(self) -> torch.Tensor | None:
        return getattr(self.model, "last_disagreement", None)


def predictor(model: nn.Module, members: Sequence[str | os.PathLike], mc_dropout: int, prog: str) -> nn.Module:
    """``model``, or a deep ensemble of it and copies holding the ``model.*`` weights of ``members``, wrapped in MC
    dropout with ``mc_dropout`` passes when > 0 (:mod:`syn2real.models.ensemble`); errors end ``prog``."""
    import copy

    from syn2real.models.checkpoint import load_model_weights

    if members:
        nets = [model]
        for path in members:
            if not Path(path).is_file():
                raise SystemExit(f"{prog}: checkpoint {path} does not exist")
            member = copy.deepcopy(model)
            load_model_weights(member, str(path))
            nets.append(member)
        model = EnsembleClassifier(nets)
    if mc_dropout:
        try:
            model = MCDropout(model, mc_dropout)
        except ValueError as err:
            raise SystemExit(f"{prog}: {err}") from None
    return model


def subset_loader(loader: Any, n: int | None, seed: int) -> tuple[Any, dict[str, int] | None]:
    """``loader``, or a loader over ``n`` of its dataset's items drawn at random with ``seed`` (kept in dataset order,
    same batch size and collation): the first N images of a class-sorted set (MNIST as packaged) would be a few
    classes only. Returns the loader and what was drawn (``None`` when all are kept)."""
    from torch.utils.data import DataLoader, Subset

    if n is None:
        return loader, None
    if n < 1:
        raise SystemExit(f"syn2real robustness: --max_images must be >= 1, got {n}")
    total = len(loader.dataset)
    if n >= total:
        return loader, None
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    subset = DataLoader(Subset(loader.dataset, chosen), batch_size=loader.batch_size, shuffle=False,
                        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
    return subset, {"images": n, "of": total, "seed": seed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, overrides = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    corruptions = [] if args.corruptions in (["none"], []) else args.corruptions
    bad = sorted(set(corruptions) - set(CORRUPTIONS) - set(EXTRA_CORRUPTIONS))
    if bad:
        raise SystemExit(
            f"syn2real robustness: unknown corruption(s) {bad}; known: {', '.join(CORRUPTIONS + EXTRA_CORRUPTIONS)}"
        )
    if any(s not in (1, 2, 3, 4, 5) for s in args.severities):
        raise SystemExit(f"syn2real robustness: severities are 1..5, got {args.severities}")
    if args.mc_dropout < 0:
        raise SystemExit(f"syn2real robustness: --mc_dropout must be >= 0, got {args.mc_dropout}")
    ckpts = [Path(c) for c in args.ckpt]
    ckpt = ckpts[0]
    method, datamodule = load_trained("syn2real robustness", args.config, ckpt, overrides)
    model = predictor(method.model, ckpts[1:], args.mc_dropout, prog="syn2real robustness")
    mean, std = normalization_of(getattr(datamodule, "eval_transforms_spec", None))
    datamodule.prepare_data()
    datamodule.setup("validate")
    domains = list(getattr(datamodule, "eval_domains", ["target"]))
    if args.domain not in domains:
        raise SystemExit(f"syn2real robustness: no evaluation domain {args.domain!r}; the data module has {domains}")
    loaders = datamodule.val_dataloader()
    loader = loaders[domains.index(args.domain)]
    # the label-honest temperature is fitted on the source validation set (clean)
    source_loader = loaders[domains.index("source")] if args.domain != "source" and "source" in domains else None
    loader, drawn = subset_loader(loader, args.max_images, args.seed)
    if source_loader is not None:
        source_loader, _ = subset_loader(source_loader, args.max_images, args.seed)
    # default: next to the run the checkpoint belongs to (<run>/checkpoints/x.ckpt -> <run>/robustness); an ensemble's
    # report goes to the ensemble's own folder (<common parent of the members' runs>/ensemble/robustness)
    run_dir = run_of(ckpt) if len(ckpts) == 1 else ensemble_root(ckpts)
    try:  # an earlier report is never replaced
        out_dir = report_dir(run_dir / "robustness", "robustness.json", args.output)
    except RunDirectoryError as err:
        raise SystemExit(f"syn2real robustness: {err}") from None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scaling: dict[str, Any] | None = None
    if args.temperature == "source":
        if source_loader is None:
            raise SystemExit("syn2real robustness: --temperature source needs the data module's source validation set "
                             f"(evaluation domains {domains}, evaluated domain {args.domain!r})")
        model = model.to(device).eval()
        temperature = fit_temperature(*_clean_logits(model, source_loader, None, device))
        model = TemperatureScaled(model, temperature)
        scaling = {"temperature": temperature, "fitted_on": "source validation set, clean"}
        print(f"syn2real robustness: every condition scored at temperature {temperature:.3f} (fitted on the source)")
    report = evaluate_robustness(
        model, loader, mean, std, args.eps, args.pgd_steps, args.pgd_step_size, args.max_angle,
        args.max_shift, args.noise, corruptions, args.severities, None, args.seed, device,
        diagram=out_dir / "reliability.png", apgd_iters=args.apgd_iters, apgd_restarts=args.apgd_restarts,
        source_batches=source_loader, domain=args.domain,
    )
    report = {"checkpoint": str(ckpt), "config": list(args.config), "domain": args.domain, **report}
    if len(ckpts) > 1:
        report["members"] = [str(c) for c in ckpts]
    if args.mc_dropout:
        report["mc_dropout"] = args.mc_dropout
    if scaling is not None:
        report["temperature_scaling"] = scaling
    if drawn is not None:
        report["random_subset"] = drawn
    write_json_atomic(report, out_dir / "robustness.json")
    what = f"an ensemble of {len(ckpts)} ({ckpt}, ...)" if len(ckpts) > 1 else str(ckpt)
    what += f" with {args.mc_dropout} MC dropout passes" if args.mc_dropout else ""
    what += f" at temperature {scaling['temperature']:.2f}" if scaling is not None else ""
    print_report(report, f"robustness of {what} on {args.domain} ({report['n_images']} images)")
    print(f"wrote {out_dir / 'robustness.json'} and {out_dir / 'reliability.png'}")
    if not args.no_wandb:
        name = Path(args.config[0]).stem
        log_wandb(report, out_dir, "syn2real-robustness", f"{name}-robustness")
    return report
