"""The one Lightning base every method subclasses.

It owns the task model, the evaluation metrics (per evaluation domain), logging, optimizer and
scheduler wiring from config, and the ``augment`` hook. A method only implements
:meth:`DAMethod.compute_losses`, returning a dict of named loss terms with the total under ``"loss"``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from syn2real.adversarial.base import Augmentation
from syn2real.io import read_checkpoint
from syn2real.methods.guard import guard_losses
from syn2real.metrics.classification import ClassificationMetrics
from syn2real.metrics.validators import EntropyValidator, InfoMaxValidator, SNDValidator
from syn2real.models.heads import NetworkConfig, build_classifier

__all__ = [
    "DAMethod", "OptimConfig", "average_gradients", "backward_local", "backward_step", "build_optimizer",
    "clip_manual_gradients", "global_mean_weight", "load_model_weights", "lr_lambda", "rank_mean", "step_schedulers",
    "describe_default", "null_defaults", "trained_epoch",
]

Batch = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Args:
        name: ``sgd``, ``adam`` or ``adamw``.
        lr: base learning rate (of the new layers; the backbone gets ``lr * backbone_lr_mult``).
        momentum / nesterov: SGD only.
        betas: Adam(W) only.
        weight_decay: L2 / decoupled weight decay.
        backbone_lr_mult: multiplier for pretrained backbone parameters (0.1 is the usual fine-tuning value).
        scheduler: ``none``; ``poly`` (``(1 - t/T)^power``, DeepLab/CBST); ``cosine`` (to ``min_lr_ratio``);
            ``inv`` (DANN's ``(1 + gamma * t/T)^-power``); ``linear`` (CycleGAN: constant, then linear decay to 0
            from the fraction ``decay_start`` of training).
        warmup_steps: linear warm-up steps before the schedule.
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    backbone_lr_mult: float = 1.0
    scheduler: Literal["none", "poly", "cosine", "inv", "linear"] = "none"
    power: float = 0.9
    gamma: float = 10.0
    inv_power: float = 0.75
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    decay_start: float = 0.5


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Multiplier of the base lr at step ``t`` for ``cfg.scheduler`` over ``total_steps`` steps."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        if cfg.scheduler == "poly":
            return (1.0 - t) ** cfg.power
        if cfg.scheduler == "cosine":
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if cfg.scheduler == "inv":
            return (1.0 + cfg.gamma * t) ** (-cfg.inv_power)
        if cfg.scheduler == "linear":
            return 1.0 if t <= cfg.decay_start else max(0.0, (1.0 - t) / max(1e-12, 1.0 - cfg.decay_start))
        return 1.0

    return factor


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over parameter ``groups`` (``{"params": [...], "lr": ...}``; empty groups dropped)."""
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    opt_cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return opt_cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def step_schedulers(module: L.LightningModule) -> None:
    """Step every lr scheduler of a manually optimised module once (one call per training batch)."""
    schedulers = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()


def clip_manual_gradients(module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Clip the gradients of ``optimizer``'s parameters to total L2 norm ``max_norm`` in a manually optimised module.

    Call it from ``on_before_optimizer_step``: Lightning runs that hook inside ``opt.step()`` after 16-mixed's
    gradient scaler has unscaled the gradients, so the bound applies to the true gradients (clipping right before
    ``opt.step()`` would clip the scaled ones). ``trainer.gradient_clip_val`` only serves automatic optimisation."""
    if max_norm is None or module.automatic_optimization:
        return
    module.clip_gradients(optimizer, gradient_clip_val=float(max_norm), gradient_clip_algorithm="norm")


def backward_local(module: L.LightningModule, loss: torch.Tensor) -> None:
    """``manual_backward(loss)`` without DDP's gradient all-reduce: gradients only accumulate on this rank.

    Manual optimisation with several optimisers (GANs, ADDA, AdaptSegNet) backpropagates several losses per batch,
    each into a different subset of the networks (the others frozen or detached). DDP's reducer expects every trained
    parameter to receive a gradient in every backward pass (else "Expected to have finished reduction in the prior
    iteration"), so each backward runs outside it and :func:`average_gradients` then averages exactly the parameters
    of the optimiser about to step: one all-reduce per optimiser, no ``find_unused_parameters``."""
    # DDP's no_sync(); absent on single-device strategies (and without a trainer, in unit tests)
    block = getattr(getattr(module._trainer, "strategy", None), "block_backward_sync", None)
    if block is None:
        module.manual_backward(loss)
        return
    with block():
        module.manual_backward(loss)


def average_gradients(module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
    """Average the gradients of ``optimizer``'s parameters over all ranks (a no-op in one process).

    Parameters without a gradient are skipped; which ones have none is fixed by the step's graph, the same on every
    rank (a rank-dependent branch around a backward pass would make the ranks disagree and must be avoided)."""
    world = getattr(module._trainer, "world_size", 1)
    if world == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def backward_step(module: L.LightningModule, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """One manual update: zero the gradients, backpropagate ``loss`` (:func:`backward_local`), average the gradients
    of ``optimizer``'s parameters over ranks (:func:`average_gradients`) and step."""
    optimizer.zero_grad()
    backward_local(module, loss)
    average_gradients(module, optimizer)
    optimizer.step()


def rank_mean(module: L.LightningModule, value: torch.Tensor) -> torch.Tensor:
    """The mean of a per-rank scalar over all ranks (itself in one process): a decision taken from it, such as ADDA's
    gate, is then the same on every rank and, with equal per-rank batches, that of the single-process global batch."""
    if getattr(module._trainer, "world_size", 1) == 1:
        return value
    return module.trainer.strategy.reduce(value.detach().float().clone(), reduce_op="mean")


def global_mean_weight(module: L.LightningModule, count: torch.Tensor) -> torch.Tensor:
    """``count / mean over ranks of count`` for this rank's number of loss elements (kept samples, labelled pixels).

    A loss that is a mean over this rank's ``count`` elements, times this weight, has DDP's averaged gradient of the
    mean over the elements of the global batch, as in one process, instead of a mean of per-rank means; in one
    process the weight is exactly 1 (0 when there are no elements)."""
    count = count.float()
    return count / rank_mean(module, count).clamp_min(1e-12)


def trained_epoch(trainer: L.Trainer) -> int:
    """The epoch of the latest training step: ``current_epoch`` is one past it once ``fit`` has ended (as in the
    evaluation of the final weights after a fit stopped by ``max_steps`` mid-epoch)."""
    started = trainer.fit_loop.epoch_progress.current.started
    return started - 1 if started else trainer.current_epoch


def describe_default(value: Any) -> str:
    """A config object as help text: ``Class(field=value, ...)`` for a dataclass, else its ``repr``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value) if f.init)
        return f"{type(value).__name__}({fields})"
    return repr(value)


def null_defaults(**defaults: Callable[[], Any]) -> Callable[[type], type]:
    """Class decorator: the ``Args`` entry of each named ``None``-defaulted parameter gains the value the constructor
    builds for ``null`` (from the same factory), so ``--model.help`` shows a method's real defaults."""

    def decorate(cls: type) -> type:
        lines = inspect.cleandoc(cls.__doc__ or "").split("\n")
        if "Args:" not in lines:
            lines += ["", "Args:"]
        start = lines.index("Args:") + 1
        end = next((i for i in range(start, len(lines)) if lines[i].strip() and not lines[i].startswith(" ")),
                   len(lines))
        for name, factory in defaults.items():
            value = factory()
            note = f"``null`` (default) = {describe_default(value)}"
            if dataclasses.is_dataclass(value):
                note += f"; a value given replaces it whole (unset fields: {type(value).__name__}'s own defaults)"
            note += "."
            entry = next((i for i in range(start, end) if lines[i].startswith(f"    {name}:")), None)
            if entry is None:  # undocumented, or documented jointly ("network / optim / augment: ...")
                lines.insert(end, f"    {name}: {note}")
            else:
                last = entry + 1
                while last < end and lines[last].startswith("        "):
                    last += 1
                lines.insert(last, f"        {note}")
            end += 1
        cls.__doc__ = "\n".join(lines)
        return cls

    return decorate


def _plain(value: Any) -> Any:
    """Hyper-parameters as YAML-able primitives, so checkpoints load with ``weights_only=True``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"{type(value).__module__}.{type(value).__qualname__}"


def load_model_weights(model: nn.Module, path: str, prefix: str = "model.", optional: tuple[str, ...] = ()) -> None:
    """Load the task network of a syn2real checkpoint (the ``model.*`` entries of any method's state dict:
    source-only, DANN, ADDA's target network, ...) into ``model``, with ``weights_only=True``.

    Raises a clear error for a missing file, a file without a ``state_dict`` and a network mismatch. Parameters whose
    names start with one of ``optional`` may be absent from the checkpoint (they keep their initialisation: e.g. the
    auxiliary classifier of a multi-level segmenter started from a single-level run)."""
    file = Path(path)
    ckpt = read_checkpoint(file, "the .ckpt of a finished stage")
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {file} has no 'state_dict'; expected a Lightning checkpoint written by syn2real")
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"checkpoint {file} has no '{prefix}*' entries; expected a syn2real method checkpoint")
    from syn2real.adversarial.advprop import (
        DualBatchNorm,
        collapse_dual_bn,
        expand_to_dual_bn,
    )

    if any(isinstance(m, DualBatchNorm) for m in model.modules()):
        weights = expand_to_dual_bn(model, weights)  # a plain checkpoint into an AdvProp (dual BatchNorm) network
    elif any(".main." in k for k in weights):
        weights = collapse_dual_bn(weights)  # an AdvProp checkpoint into a plain network: its main BatchNorms
    try:
        if optional:
            missing, unexpected = model.load_state_dict(weights, strict=False)
            missing = [k for k in missing if not k.startswith(optional)]
            if missing or unexpected:
                raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        else:
            model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {file} does not fit model.network (same backbone, num_classes, bottleneck?): {err}"
        ) from err


class DAMethod(L.LightningModule):
    """Base of every method: task model + losses (:meth:`compute_losses`) + optional augmentation.

    Args:
        network: the task network (timm backbone, optional bottleneck, linear head).
        optim: optimizer and schedule.
        augment: applied to the labelled source batch during training (adversarial/spatial examples).

    ``nan_guard`` (toggled by ``--nan_guard.enabled``) checks every loss term for NaN/inf before the optimizer step;
    manually optimised methods set ``grad_clip`` (max gradient L2 norm per optimizer step, see
    :func:`clip_manual_gradients`).
    """

    nan_guard: bool = True
    grad_clip: float | None = None

    def __init__(
        self,
        network: NetworkConfig | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])
        self._set_hparams(_plain(dict(self.hparams)))
        self.network_cfg = network or NetworkConfig()
        self.optim_cfg = optim or OptimConfig()
        self.augment = augment
        self.model = self.build_network()
        if augment is not None:
            augment.prepare(self.model)  # e.g. AdvProp's dual BatchNorm, before any optimizer sees the parameters
        self._augment_losses: dict[str, torch.Tensor] = {}
        self.eval_metrics = nn.ModuleDict({d: self.build_domain_metrics(d) for d in ("target", "source")})
        # label-free scores of the target predictions, for unsupervised checkpoint selection
        # (`checkpoint.monitor: target/validator/snd`, mode max)
        self.validators = nn.ModuleDict(self.build_validators())
        self.eval_domains: list[str] = ["target"]
        self.last_confusion: dict[str, torch.Tensor] = {}
        self.last_eval_step: int | None = None  # global step of the latest (non-sanity) evaluation
        # every evaluation during fit: metrics + label-free validators (model-selection studies, metrics.json)
        self.eval_history: list[dict[str, float]] = []

    # -- what the task is (segmentation methods override these three) ----------------------------
    def build_network(self) -> nn.Module:
        """The task network of ``self.network_cfg`` (an image classifier here)."""
        return build_classifier(self.network_cfg)

    def build_domain_metrics(self, domain: str) -> nn.Module:
        """Evaluation metrics of one domain, with ``update``, ``compute``, ``confusion``, ``has_updates``, ``reset``,
        ``class_names`` and ``main_keys`` (the values shown in the progress bar, the first one in the summary line)."""
        return ClassificationMetrics(self.network_cfg.num_classes, prefix=domain)

    def build_validators(self) -> dict[str, nn.Module]:
        """Label-free validators updated with the target's (N, C) probabilities."""
        n = self.network_cfg.num_classes
        return {"entropy": EntropyValidator(), "infomax": InfoMaxValidator(n), "snd": SNDValidator()}

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
                    f"model.network.num_classes is {self.network_cfg.num_classes} but the data has "
                    f"{len(classes)} classes {list(classes)}; set model.init_args.network.num_classes"
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

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of one training step; the total to minimise under ``"loss"``."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self._augment_losses = {}
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

    # -- evaluation -----------------------------------------------------------------------------
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits used for evaluation and prediction; methods override it (ASG/CSG: flip-averaged)."""
        return self.model(x)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> None:
        x, y = batch
        domain = self.eval_domains[dataloader_idx]
        logits = self.eval_logits(x)
        self.eval_metrics[domain].update(logits, y)
        if domain == "target":
            probs = logits.detach().float().softmax(dim=1)
            for validator in self.validators.values():
                validator.update(probs)

    def _eval_epoch_end(self) -> None:
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
        if not self.trainer.sanity_checking:
            self.last_eval_step = self.trainer.global_step
            if summary:
                rank_zero_info(f"epoch {trained_epoch(self.trainer)} step {self.global_step}: " + ", ".join(summary))
            if record and self.trainer.state.fn == "fit":
                self.eval_history.append({"epoch": self.current_epoch, "global_step": self.global_step, **record})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["syn2real_eval_history"] = list(self.eval_history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.eval_history = list(checkpoint.get("syn2real_eval_history") or [])

    def run_summary(self) -> dict[str, Any]:
        """Structured records added to ``metrics.json``: the per-evaluation history of this fit."""
        return {"eval_history": list(self.eval_history)} if self.eval_history else {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        x, _ = batch
        conf, pred = self.eval_logits(x).softmax(dim=1).max(dim=1)
        return {"pred": pred, "confidence": conf}

    # -- optimisation ---------------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        clip_manual_gradients(self, optimizer, self.grad_clip)

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups with their lr; methods with extra trained networks extend this."""
        cfg = self.optim_cfg
        groups = self.model.param_groups()
        return [
            {"params": groups["backbone"], "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"},
            {"params": groups["head"], "lr": cfg.lr, "name": "head"},
        ]

    def build_optimizer(self, groups: list[dict[str, Any]], cfg: OptimConfig | None = None) -> torch.optim.Optimizer:
        """The optimizer of ``cfg`` over ``groups``; callbacks with ``split_param_groups(module, groups)`` (the
        layer-wise learning-rate policy) may first split the groups, e.g. the backbone into its stages."""
        groups = [g for g in groups if g["params"]]
        for callback in (getattr(self._trainer, "callbacks", None) or []):
            split = getattr(callback, "split_param_groups", None)
            if callable(split):
                groups = split(self, groups)
        return build_optimizer(groups, cfg or self.optim_cfg)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig | None = None) -> LambdaLR | None:
        """The per-step schedule of ``cfg`` over the whole fit, or None for a constant lr without warm-up."""
        cfg = cfg or self.optim_cfg
        if cfg.scheduler == "none" and cfg.warmup_steps == 0:
            return None
        return LambdaLR(optimizer, lr_lambda(cfg, int(self.trainer.estimated_stepping_batches)))

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer(self.param_groups())
        scheduler = self.build_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
