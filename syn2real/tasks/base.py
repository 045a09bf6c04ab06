"""What a method is trained to do, injected into it: :class:`Task`.

A method (source-only, MinEnt, CyCADA, ...) is written once against this interface; the task supplies the network,
the supervised loss, the evaluation metrics and label-free validators, the evaluation step, predictions and the
pictures. Config: ``model.init_args.task: {class_path: syn2real.tasks.Segmentation, init_args: {network: ...}}``
(``Classification`` when omitted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from syn2real.core.labels import IGNORE_INDEX
from syn2real.losses.mean_teacher import weighted_cross_entropy

__all__ = ["Task"]


class Task:
    """Base of the tasks: everything a method needs to know about its outputs and labels.

    ``module`` arguments are the method (a LightningModule with ``model``, ``eval_metrics``, ``validators``,
    ``eval_domains``); the task itself holds only its settings and the picture sample of the current evaluation.
    """

    #: short name (``classification``, ``segmentation``), written into exports and shown in errors
    kind: ClassVar[str] = ""
    #: labels equal to this value are not supervised (unlabelled pixels)
    ignore_index: ClassVar[int] = IGNORE_INDEX
    #: name of :meth:`accuracy` in logs (``train/source_<name>``)
    accuracy_name: ClassVar[str] = "acc"
    #: parameter-name prefixes a checkpoint may lack when it starts this task's network (kept at initialisation)
    optional_weights: ClassVar[tuple[str, ...]] = ()

    #: the network config; ``None`` until the method fills in its default (:meth:`default_network`)
    network: Any

    def default_network(self) -> Any:
        """The network when neither the config nor the method names one."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args().items())
        return f"{type(self).__name__}({args})"

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments, for checkpoints' hyper-parameters (rebuilt by ``class_path`` + these)."""
        raise NotImplementedError

    def class_path_config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": ...}``: how LightningCLI writes (and rebuilds) this task."""
        args = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in self.init_args().items()}
        return {"class_path": f"{type(self).__module__.rsplit('.', 1)[0]}.{type(self).__qualname__}", "init_args": args}

    @property
    def num_classes(self) -> int:
        return int(self.network.num_classes)

    # -- what the method trains ---------------------------------------------------------------------
    def build_network(self) -> nn.Module:
        raise NotImplementedError

    def levels(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """Training logits of every output level (main first), at the labels' resolution."""
        raise NotImplementedError

    def loss(self, module: Any, levels: Sequence[torch.Tensor], labels: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """The supervised loss of ``levels`` against ``labels`` (times ``weight`` when given)."""
        raise NotImplementedError

    def masked_loss(self, module: Any, levels: Sequence[torch.Tensor],
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The supervised loss over the elements with a label (pseudo-labels: ``labels == unlabelled`` are
        skipped), as a mean over this rank's labelled elements, and the weight that turns it into a mean over the
        global batch's (:func:`~syn2real.core.distributed.global_mean_weight`; 1 in one process)."""
        raise NotImplementedError

    def weighted_loss(self, levels: Sequence[torch.Tensor], labels: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
        """Mean over all samples/pixels of ``weight`` · cross-entropy of the main level (pseudo-labels with a
        confidence weight, mean-teacher self-training); ``weight`` is shaped like ``labels``."""
        return weighted_cross_entropy(levels[0], labels, weight, self.ignore_index)

    # -- self-training ----------------------------------------------------------------------------------
    #: the pseudo-label of an element that has none
    unlabelled: ClassVar[int] = -1

    def pseudo_label_rounds(self, config: Any, soft: bool, lrent_alpha: float) -> Any:
        """The callback that computes each self-training round's pseudo-labels (``config``: a
        :class:`~syn2real.callbacks.pseudo_labels.RoundConfig`)."""
        raise NotImplementedError

    def pseudo_labelled_target(self, batch: dict[str, Any], rounds: Any
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The target images of a training batch, their pseudo-labels and (LRENT) soft labels."""
        raise NotImplementedError

    def accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Share of correct predictions (labelled samples/pixels only), for training logs."""
        raise NotImplementedError

    # -- evaluation -----------------------------------------------------------------------------------
    def build_metrics(self, domain: str) -> nn.Module:
        """Evaluation metrics of one domain, with ``update``, ``compute``, ``confusion``, ``has_updates``, ``reset``,
        ``class_names`` and ``main_keys`` (the values shown in the progress bar, the first one in the summary)."""
        raise NotImplementedError

    def build_validators(self) -> dict[str, nn.Module]:
        """Label-free validators of the target predictions (``target/validator/<name>``)."""
        raise NotImplementedError

    def on_eval_epoch_start(self) -> None:
        """Called before each validation/test epoch."""

    def eval_step(self, module: Any, x: torch.Tensor, y: torch.Tensor, domain: str) -> None:
        """Update ``module.eval_metrics[domain]`` (and the validators for the target) with one batch."""
        raise NotImplementedError

    def probabilities(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the evaluation protocol, (B, C) or (B, C, H, W)."""
        raise NotImplementedError

    def predict(self, module: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pred": ..., "confidence": ...}`` of a prediction batch."""
        conf, pred = self.probabilities(module, x).max(dim=1)
        return {"pred": pred, "confidence": conf}

    # -- pictures ---------------------------------------------------------------------------------------
    def training_media(self, module: Any, batch: dict[str, Any], max_images: int) -> dict[str, torch.Tensor]:
        """``{name: (rows, N, C, H, W) in [0, 1]}`` of a training batch (none by default)."""
        return {}

    def eval_media(self, module: Any) -> dict[str, torch.Tensor]:
        """Pictures of the latest evaluation (none by default)."""
        return {}
