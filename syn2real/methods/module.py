"""The task-free Lightning base of every syn2real module (adaptation methods and EnlightenGAN alike).

:class:`Syn2RealModule` owns what does not depend on the task: hyper-parameters stored as plain YAML types (so
checkpoints load with ``weights_only=True``), the NaN guard switch, the evaluation history and its checkpoint hooks,
the validation/test glue, gradient clipping of manually optimised methods, and optimisers/schedules built from
:class:`~syn2real.methods.optim.OptimConfig` (callbacks may split the parameter groups first).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from syn2real.methods.optim import OptimConfig, build_optimizer, build_schedule
from syn2real.methods.update import step_schedulers

__all__ = [
    "Syn2RealModule", "clip_manual_gradients", "describe_default", "null_defaults", "plain_hparams", "trained_epoch",
]


def clip_manual_gradients(module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Clip the gradients of ``optimizer``'s parameters to total L2 norm ``max_norm`` in a manually optimised module.

    Call it from ``on_before_optimizer_step``: Lightning runs that hook inside ``opt.step()`` after 16-mixed's
    gradient scaler has unscaled the gradients, so the bound applies to the true gradients (clipping right before
    ``opt.step()`` would clip the scaled ones). ``trainer.gradient_clip_val`` only serves automatic optimisation."""
    if max_norm is None or module.automatic_optimization:
        return
    module.clip_gradients(optimizer, gradient_clip_val=float(max_norm), gradient_clip_algorithm="norm")


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


def plain_hparams(value: Any) -> Any:
    """Hyper-parameters as YAML-able primitives, so checkpoints load with ``weights_only=True``."""
    if callable(getattr(value, "class_path_config", None)):  # an injected object (the task): class_path + init_args
        return plain_hparams(value.class_path_config())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_hparams(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain_hparams(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_hparams(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"{type(value).__module__}.{type(value).__qualname__}"


class Syn2RealModule(L.LightningModule):
    """Task-free base: hyper-parameters, NaN guard, evaluation history, checkpoint hooks, clipping, optimisers.

    Subclasses implement :meth:`eval_step` (one evaluation batch) and :meth:`eval_epoch_end` (compute, log, reset;
    then :meth:`record_evaluation`), and set ``optim_cfg``. ``nan_guard`` (toggled by ``--nan_guard.enabled``)
    checks loss terms before updates; manually optimised modules set ``grad_clip`` (see
    :func:`clip_manual_gradients`). Constructor arguments named in ``hparams_ignore`` are not stored as
    hyper-parameters."""

    nan_guard: bool = True
    grad_clip: float | None = None
    hparams_ignore: tuple[str, ...] = ()
    optim_cfg: OptimConfig

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        self._set_hparams(plain_hparams(dict(self.hparams)))
        self.last_eval_step: int | None = None  # global step of the latest (non-sanity) evaluation
        # every evaluation during fit (metrics, validators), for model-selection studies and metrics.json
        self.eval_history: list[dict[str, float]] = []

    # -- checkpoints and records -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["syn2real_eval_history"] = list(self.eval_history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.eval_history = list(checkpoint.get("syn2real_eval_history") or [])

    def run_summary(self) -> dict[str, Any]:
        """Structured records added to ``metrics.json``: the per-evaluation history of this fit."""
        return {"eval_history": list(self.eval_history)} if self.eval_history else {}

    # -- evaluation glue ---------------------------------------------------------------------------
    def eval_step(self, batch: Any, dataloader_idx: int) -> None:
        """Update the evaluation metrics with one batch of evaluation loader ``dataloader_idx``."""
        raise NotImplementedError

    def eval_epoch_end(self) -> None:
        """Compute, log and reset the evaluation metrics (then :meth:`record_evaluation`)."""
        raise NotImplementedError

    def record_evaluation(self, record: dict[str, float], summary: str) -> None:
        """After an evaluation (not the sanity check): remember its step, print ``summary`` and, during fit, append
        ``record`` to the evaluation history."""
        if self.trainer.sanity_checking:
            return
        self.last_eval_step = self.trainer.global_step
        if summary:
            rank_zero_info(f"epoch {trained_epoch(self.trainer)} step {self.global_step}: {summary}")
        if record and self.trainer.state.fn == "fit":
            self.eval_history.append({"epoch": self.current_epoch, "global_step": self.global_step, **record})

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self.eval_epoch_end()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.eval_epoch_end()

    # -- optimisation ------------------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        clip_manual_gradients(self, optimizer, self.grad_clip)

    def build_optimizer(self, groups: list[dict[str, Any]], cfg: OptimConfig | None = None) -> torch.optim.Optimizer:
        """The optimizer of ``cfg`` (default ``optim_cfg``) over ``groups``; callbacks with
        ``split_param_groups(module, groups)`` (the layer-wise learning-rate policy) may first split the groups,
        e.g. the backbone into its stages. The module's parameter names select the groups without weight decay
        (``optim.no_decay_keys``)."""
        groups = [g for g in groups if g["params"]]
        for callback in (getattr(self._trainer, "callbacks", None) or []):
            split = getattr(callback, "split_param_groups", None)
            if callable(split):
                groups = split(self, groups)
        return build_optimizer(groups, cfg or self.optim_cfg, self.named_parameters())

    def build_scheduler(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig | None = None) -> LambdaLR | None:
        """The per-step schedule of ``cfg`` (default ``optim_cfg``) over the whole fit, or None for a constant lr
        without warm-up."""
        cfg = cfg or self.optim_cfg
        if cfg.scheduler == "none" and cfg.warmup_steps == 0:
            return None
        return build_schedule(optimizer, cfg, int(self.trainer.estimated_stepping_batches))

    # -- manual optimisation (several optimisers) --------------------------------------------------
    def update_step(self, batch: Any, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One training batch of a manually optimised method: one
        :func:`~syn2real.methods.update.optimizer_update` per optimiser (given as arguments, so a test drives it
        with plain torch optimisers). Returns the values to log as ``train/<name>`` (``loss`` in the progress
        bar)."""
        raise NotImplementedError

    def manual_training_step(self, batch: Any, batch_size: int) -> dict[str, torch.Tensor]:
        """:meth:`update_step` with this module's optimisers, then one step of every schedule and the logs."""
        optimizers = self.optimizers()
        logged = self.update_step(batch, optimizers if isinstance(optimizers, list) else [optimizers])
        step_schedulers(self)
        self.log("train/loss", logged["loss"], prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in logged.items() if k != "loss"}, batch_size=batch_size)
        return logged
