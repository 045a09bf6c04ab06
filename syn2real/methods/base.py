"""The base of every adaptation method: a task model + losses + an optional augmentation.

:class:`DAMethod` is given its task (``task:``, :mod:`syn2real.tasks`: classification or segmentation), which
builds the network, the metrics and validators, the supervised loss, the evaluation step and the pictures; the
method adds its losses. A method only implements :meth:`DAMethod.compute_losses` (automatic optimisation), or
``training_step`` with :func:`~syn2real.methods.update.optimizer_update` per optimiser (manual optimisation),
returning a dict of named loss terms with the total under ``"loss"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from syn2real.adversarial.base import Augmentation
from syn2real.core.guard import guard_losses
from syn2real.methods.module import Syn2RealModule
from syn2real.methods.optim import OptimConfig
from syn2real.models.checkpoint import load_model_weights
from syn2real.tasks import Classification, Task

__all__ = ["Batch", "DAMethod"]

Batch = dict[str, tuple[torch.Tensor, torch.Tensor]]


class DAMethod(Syn2RealModule):
    """Base of every adaptation method: task model + losses (:meth:`compute_losses`) + optional augmentation.

    Args:
        task: what the network predicts (:class:`~syn2real.tasks.Classification` with the method's default network
            when ``null``, or :class:`~syn2real.tasks.Segmentation`), with its network.
        optim: optimizer and schedule.
        augment: applied to the labelled source batch during training (adversarial/spatial examples).

    ``nan_guard`` (toggled by ``--nan_guard.enabled``) checks every loss term for NaN/inf before the optimizer step;
    manually optimised methods set ``grad_clip`` (max gradient L2 norm per optimizer step).
    """

    hparams_ignore = ("augment",)
    #: the tasks a method supports (its losses need e.g. feature vectors or pixel maps)
    supported_tasks: tuple[type[Task], ...] = (Task,)

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        self.task = task if task is not None else self.default_task()
        if self.task.network is None:
            self.task.network = self.default_network(self.task)
        if not isinstance(self.task, self.supported_tasks):
            kinds = " or ".join(t.__name__ for t in self.supported_tasks)
            raise ValueError(
                f"{type(self).__name__} supports the task {kinds}, got {type(self.task).__name__}; "
                f"set model.init_args.task"
            )
        self.optim_cfg = optim or self.default_optim()
        self.augment = augment
        self.model = self.task.build_network()
        if augment is not None:
            augment.prepare(self.model)  # e.g. AdvProp's dual BatchNorm, before any optimizer sees the parameters
        self._augment_losses: dict[str, torch.Tensor] = {}
        self.eval_metrics = nn.ModuleDict({d: self.task.build_metrics(d) for d in ("target", "source")})
        # label-free scores of the target predictions, for unsupervised checkpoint selection
        # (`checkpoint.monitor: target/validator/snd`, mode max)
        self.validators = nn.ModuleDict(self.task.build_validators())
        self.eval_domains: list[str] = ["target"]
        self.last_confusion: dict[str, torch.Tensor] = {}

    def default_task(self) -> Task:
        """The task when ``task`` is ``null``: classification."""
        return Classification()

    def default_network(self, task: Task) -> Any:
        """The network when the task names none: the task's default (methods with a paper network override it)."""
        return task.default_network()

    def default_optim(self) -> OptimConfig:
        """The optimiser when ``optim`` is ``null``."""
        return OptimConfig()

    @property
    def network_cfg(self) -> Any:
        """The task's network config."""
        return self.task.network

    def load_weights(self, path: str) -> None:
        """Start the task network from the ``model.*`` weights of a syn2real checkpoint (stage chaining)."""
        load_model_weights(self.model, path, optional=self.task.optional_weights)

    # -- wiring with the data -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        self.eval_domains = list(getattr(dm, "eval_domains", ["target"])) or ["target"]
        classes = getattr(dm, "classes", None)
        if classes is not None:
            if len(classes) != self.network_cfg.num_classes:
                raise ValueError(
                    f"model.task.network.num_classes is {self.network_cfg.num_classes} but the data has "
                    f"{len(classes)} classes {list(classes)}; set model.init_args.task.init_args.network.num_classes"
                )
            for metrics in self.eval_metrics.values():
                metrics.class_names = list(classes)

    # -- training -------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # Lightning 2.6 never calls train() when fitting starts (modules keep the mode they were built in; evaluation
        # restores each module's mode afterwards), so the methods' train() overrides -- frozen BatchNorm statistics
        # (freeze_bn), frozen teachers and guides in eval mode -- are applied here, before the first step.
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def source_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The labelled source batch, passed through ``augment`` when one is configured.

        The augmentation's extra loss terms on the clean batch (AdvProp, Jacobian penalty) are computed here and
        added to the step's total by :meth:`training_step`."""
        x, y = batch["source"]
        return self.augment_labelled(x, y)

    def augment_labelled(self, x: torch.Tensor, y: torch.Tensor, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """``augment`` applied to a labelled batch; its auxiliary loss terms are queued for this step's total."""
        if self.augment is None:
            return x, y
        for name, value in self.augment.auxiliary_losses(self.model, x, y).items():
            self._augment_losses[prefix + name] = value
        return self.augment(self.model, x, y)

    def pop_augment_losses(self) -> dict[str, torch.Tensor]:
        """The auxiliary augmentation losses queued since the last call (and clear the queue)."""
        out, self._augment_losses = self._augment_losses, {}
        return out

    def supervised_losses(self, x: torch.Tensor, y: torch.Tensor, prefix: str = "source",
                          levels: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The task's supervised loss of a labelled batch: ``{"loss", "<prefix>_ce", "<prefix>_<accuracy>"}``
        (``levels``: the batch's training logits when the caller already computed them)."""
        levels = self.task.levels(self.model, x) if levels is None else levels
        loss = self.task.loss(self, levels, y)
        return {"loss": loss, f"{prefix}_ce": loss.detach(),
                f"{prefix}_{self.task.accuracy_name}": self.task.accuracy(levels[0].detach(), y)}

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of one training step; the total to minimise under ``"loss"``."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        self._augment_losses = {}
        if not self.automatic_optimization:  # several optimisers: update_step, one optimizer_update per optimiser
            self.manual_training_step(batch, batch["source"][0].shape[0])
            return None
        losses = self.compute_losses(batch)
        if "loss" not in losses:
            raise KeyError(f"{type(self).__name__}.compute_losses must return a 'loss' entry, got {list(losses)}")
        extra = self.pop_augment_losses()
        if extra:
            losses = {**losses, **extra, "loss": losses["loss"] + sum(extra.values())}
        guard_losses(self, losses)
        bs = batch["source"][0].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=bs)
        return losses["loss"]

    def training_media(self, batch: Batch, max_images: int = 4) -> dict[str, torch.Tensor]:
        """W&B pictures of a training batch, from the task (segmentation: image | labels | prediction rows)."""
        return self.task.training_media(self, batch, max_images)

    def eval_media(self) -> dict[str, torch.Tensor]:
        """W&B pictures of the latest evaluation, from the task."""
        return self.task.eval_media(self)

    # -- evaluation -----------------------------------------------------------------------------
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits used for classification evaluation and prediction; methods override it (ASG/CSG: flip-averaged)."""
        return self.model(x)

    def on_validation_epoch_start(self) -> None:
        self.task.on_eval_epoch_start()

    def on_test_epoch_start(self) -> None:
        self.task.on_eval_epoch_start()

    def eval_step(self, batch: Any, dataloader_idx: int) -> None:
        self.task.eval_step(self, batch[0], batch[1], self.eval_domains[dataloader_idx])

    def eval_epoch_end(self) -> None:
        summary: list[str] = []
        record: dict[str, float] = {}
        for domain, metrics in self.eval_metrics.items():
            if not metrics.has_updates():
                continue
            values = metrics.compute()
            main = [f"{domain}/{k}" for k in metrics.main_keys]
            summary.append(f"{main[0]} {100 * float(values[main[0]]):.2f} %")
            record.update({k: float(v) for k, v in values.items() if not k.startswith(f"{domain}/{metrics.per_class}/")})
            self.last_confusion[domain] = metrics.confusion().cpu()
            self.log_dict({k: v for k, v in values.items() if k in main}, prog_bar=True, sync_dist=True)
            self.log_dict({k: v for k, v in values.items() if k not in main}, sync_dist=True)
            metrics.reset()
        if self.validators["entropy"].update_count:
            scores = {f"target/validator/{k}": v.compute() for k, v in self.validators.items()}
            self.log_dict(scores, sync_dist=True)
            record.update({k: float(v) for k, v in scores.items()})
            for validator in self.validators.values():
                validator.reset()
        self.record_evaluation(record, ", ".join(summary))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return self.task.predict(self, batch[0])

    # -- optimisation ---------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups with their lr; methods with extra trained networks extend this."""
        cfg = self.optim_cfg
        groups = self.model.param_groups()
        return [
            {"params": groups["backbone"], "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"},
            {"params": groups["head"], "lr": cfg.lr, "name": "head"},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer(self.param_groups())
        scheduler = self.build_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
