"""The interface of a method (a ``LightningModule`` of ``syn2real.methods``) as the layers above and beside it read it.

Callbacks, loggers and commands never import a method: they receive one from Lightning and read the members declared
here, documented once. :class:`MethodInterface` is the whole contract; the optional hooks are also small
``runtime_checkable`` protocols, so a callback asks ``isinstance(pl_module, SupportsTrainingMedia)`` instead of
probing names with ``getattr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "MethodInterface", "SupportsEvalMedia", "SupportsPseudoLabelProbabilities", "SupportsRunSummary",
    "SupportsTrainingMedia",
]


@runtime_checkable
class SupportsTrainingMedia(Protocol):
    """A method that draws pictures of a training batch (``WandbMedia``, every ``every_n_steps`` batches and once
    more at the end of training)."""

    def training_media(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{name: (R, N, C, H, W) images in [0, 1]}``: R rows of N images, logged as one grid per name and saved
        as ``<run>/media/<name>.png``. Called in eval mode or training mode, without changing the run (the caller
        restores random streams and buffers)."""
        ...


@runtime_checkable
class SupportsEvalMedia(Protocol):
    """A method that draws pictures of its latest evaluation (``WandbMedia``, after each validation and test)."""

    def eval_media(self) -> dict[str, torch.Tensor]:
        """Like :meth:`SupportsTrainingMedia.training_media`, from images the method kept during evaluation."""
        ...


@runtime_checkable
class SupportsRunSummary(Protocol):
    """A method with structured records for ``metrics.json`` (``MetricsJSON``)."""

    def run_summary(self) -> dict[str, Any]:
        """Extra top-level entries of ``metrics.json`` (self-training: ``self_training_rounds``); JSON-serialisable."""
        ...


@runtime_checkable
class SupportsPseudoLabelProbabilities(Protocol):
    """A method whose self-training rounds choose pseudo-labels from other probabilities than the softmax of its
    forward pass (DRST: the robust classifier's). ``PseudoLabelRounds`` calls it on every target batch."""

    def pseudo_label_probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(probs, stats)`` of a batch in eval mode, without gradients: (B, C) class probabilities and named
        (B,) per-sample statistics; the rounds record the mean of each over the target set (``mean_<name>``) and
        over the samples kept (``mean_<name>_kept``)."""
        ...


class MethodInterface(SupportsTrainingMedia, SupportsEvalMedia, SupportsRunSummary, Protocol):
    """Every member of a method that code outside ``syn2real.methods`` reads. The three hooks are optional (check
    with the protocols above); of the attributes, a task method (``DAMethod``) has all, ``EnlightenGAN`` (no task
    network) has ``eval_metrics``, ``last_eval_step`` and ``nan_guard``; readers give defaults for the others."""

    model: nn.Module
    """The task network: ``backbone`` (timm-style, ``forward_features``) and ``head`` (``GeneralisationDiagnostics``,
    ``LayerwiseLR``, ``PixelPseudoLabelRounds``, ``syn2real robustness`` / ``export``)."""

    network_cfg: Any
    """The network config (``num_classes``, backbone name): pseudo-label rounds, diagnostics, ``syn2real export``."""

    inference: Any
    """Segmentation only: the evaluation's ``InferenceConfig`` (whole / sliding window, flip, scales), reused by
    ``PixelPseudoLabelRounds`` to predict pseudo-labels exactly as the evaluation does."""

    eval_domains: list[str]
    """Evaluation loader ``i`` is domain ``eval_domains[i]`` (``target``, then ``source``)."""

    eval_metrics: Mapping[str, Any]
    """Per evaluated domain, its metrics object (``class_names``; ``per_class == "iou"`` for segmentation)."""

    last_confusion: dict[str, torch.Tensor]
    """Per evaluated domain, the confusion matrix (rows: true class) of the latest evaluation (``WandbMedia``)."""

    last_eval_step: int | None
    """Global step of the latest non-sanity evaluation: ``MetricsJSON`` and the CLI re-evaluate a fit whose last
    steps were not evaluated."""

    nan_guard: bool
    """Set by ``NaNGuard`` (``--nan_guard.enabled``); read by :func:`syn2real.core.guard.guard_losses` and by
    ``RunCheckpoint`` (a state with NaN/inf is not written while it is on)."""
