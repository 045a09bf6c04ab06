"""Checkpoints that are written atomically and load with ``torch.load(weights_only=True)``, and the global random
states they carry (:mod:`syn2real.core.rng`) so that a resumed run continues exactly as the uninterrupted one."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from syn2real.core.rng import preserved_rng, rng_state, set_rng_state
from syn2real.io import atomic_torch_save, non_finite_entry, read_checkpoint

__all__ = ["AtomicCheckpointIO", "RunCheckpoint", "ResumeRNG", "ResumeOverrides", "changed_hparams",
           "LIGHTNING_CHECKPOINT", "non_finite_entry", "side_effect_free"]


LIGHTNING_CHECKPOINT = "a syn2real/Lightning checkpoint (a .ckpt of a syn2real run)"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic local writes, ``weights_only=True`` loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, LIGHTNING_CHECKPOINT, map_location=map_location, require=("state_dict",))


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes to ``<trainer.default_root_dir>/checkpoints`` unless ``dirpath`` is set,
    and keeps ``last.ckpt`` by default (for ``--ckpt_path last``): the weights of the latest evaluation, whether or
    not they are the best by ``monitor``.

    Two differences from Lightning's: ``every_n_train_steps`` writes ``last.ckpt`` from the first interval on even
    while the monitored metric does not exist yet (Lightning defers every save to the first validation, so a crash in
    epoch 0 could not be resumed); the best-by-monitor checkpoint still waits for the metric. And while the NaN guard
    is on (``--nan_guard.enabled``, the default), a state with a NaN/inf parameter or buffer is never written: the
    previous checkpoint stays the last good one.
    """

    def __init__(self, dirpath: str | None = None, save_last: bool | None = True, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, save_last=save_last, **kwargs)

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self._every_n_train_steps
        if not (self._defer_save_until_validation and self.save_last and n >= 1 and trainer.global_step % n == 0):
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_unmarked(trainer)  # the monitored metric does not exist yet

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer: Trainer) -> None:
        """``last.ckpt`` after every evaluation, whether or not the monitored metric improved: Lightning (>= 2.5)
        writes it only in a step that also wrote a best-by-monitor checkpoint, so a run whose best epoch came
        early ended with ``last.ckpt`` = ``best.ckpt`` and its final weights nowhere on disk."""
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return  # skipped also when this step already wrote a checkpoint (and Lightning the last with it)
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_train_end(trainer, pl_module)  # Lightning's: a last.ckpt if none was written during the fit
        # with periodic checkpoints, a fit that stops between two of them (max_steps mid-epoch, max_time) keeps its
        # final weights in last.ckpt (without them last.ckpt stays Lightning's copy of the latest saved checkpoint)
        if (self.save_last and self._every_n_train_steps >= 1 and not trainer.interrupted
                and not self._should_skip_saving_checkpoint(trainer)):
            self._save_last_unmarked(trainer)

    def _save_last_unmarked(self, trainer: Trainer) -> None:
        """Write ``last.ckpt`` now without marking the step as saved, so that a deferred best-by-monitor save still
        happens at the next validation, even at this very step."""
        saved_step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = saved_step

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        guarded = getattr(module, "nan_guard", True)  # --nan_guard.enabled false writes whatever the state is
        bad = non_finite_entry(dict(module.state_dict())) if guarded else None
        # one verdict for all ranks (BatchNorm buffers are per rank): a save skipped on one rank only would hang the
        # others in the save's barrier
        if trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            if trainer.is_global_zero:
                warnings.warn(
                    f"checkpoint {filepath} not written at global step {trainer.global_step}: "
                    f"'{bad or 'a tensor on another rank'}' holds NaN/inf; "
                    "the previous checkpoint is kept as the last good one", stacklevel=2,
                )
            return
        super()._save_checkpoint(trainer, filepath)


@contextmanager
def side_effect_free(module: torch.nn.Module) -> Iterator[None]:
    """:func:`~syn2real.core.rng.preserved_rng`, and the module's buffers (BatchNorm running statistics and
    counters) restored afterwards: a forward pass for a picture in training mode leaves the run exactly as it was."""
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    try:
        with preserved_rng():
            yield
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])


class ResumeRNG(Callback):
    """Keeps the global random states in every checkpoint and restores them at the first training batch after
    ``--ckpt_path``: by then the resumed run has done its own setup (sanity validation, new loader passes), so from
    that batch on dropout, random layers and method-level sampling draw exactly as in the uninterrupted run."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested hyper-parameters (dicts, dataclasses, namespaces) as ``{"a.b": leaf}``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        value = vars(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if str(key).startswith("_"):  # LightningCLI's own bookkeeping (_class_path, _instantiator)
                continue
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    if isinstance(value, (list, tuple)):
        value = [v for v in value]
    return {prefix[:-1]: value}


def changed_hparams(saved: Any, current: Any) -> dict[str, tuple[Any, Any]]:
    """``{"optim.lr": (in the checkpoint, now)}`` for every hyper-parameter whose value differs."""
    old, new = _flat(saved or {}), _flat(current or {})
    missing = object()
    return {k: (old.get(k, missing), new.get(k, missing)) for k in sorted(set(old) | set(new))
            if old.get(k, missing) != new.get(k, missing)}


class ResumeOverrides(Callback):
    """What ``fit --ckpt_path`` means: continue the checkpoint's run (weights, optimiser moments, schedule position,
    loop counters, random states) **with the values of this command**. Hyper-parameters that differ from the
    checkpoint's are listed in the log; the optimiser settings among them (lr, weight decay, momentum, betas) are
    written into the restored optimisers, which would otherwise keep the checkpoint's: a new base lr takes the
    schedule's current factor (``new base × factor at the restored step``), so a resumed poly schedule goes on from
    where it was at the new scale. Nothing changes when the values are the checkpoint's, so exact resume stays exact.
    """

    def __init__(self) -> None:
        self._saved: Any = None
        self._fresh: list[list[dict[str, Any]]] | None = None
        self.changes: dict[str, tuple[Any, Any]] = {}
        self.applied: list[str] = []

    def on_load_checkpoint(self, trainer: Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == "fit":
            self._saved = checkpoint.get("hyper_parameters", {})

    def on_fit_start(self, trainer: Trainer, pl_module: Any) -> None:
        # called after configure_optimizers and before the optimiser states are restored: the command's settings
        if trainer.ckpt_path is not None:
            self._fresh = [[{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]
                           for opt in trainer.optimizers]

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        if self._saved is None or self._fresh is None:
            return
        self.changes = changed_hparams(self._saved, dict(pl_module.hparams))
        self._saved = None
        if not self.changes:
            self._fresh = None
            return
        self.applied = self._apply_optimiser_settings(trainer)
        self._fresh = None
        shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in self.changes.items())
        lines = [f"resuming {trainer.ckpt_path} at global step {trainer.global_step} with values that differ from "
                 f"the checkpoint's (this command's values are used): {shown}"]
        if self.applied:
            lines.append("restored optimiser settings replaced: " + "; ".join(self.applied))
        rank_zero_info("\n".join(lines))

    def _apply_optimiser_settings(self, trainer: Trainer) -> list[str]:
        schedulers = {id(c.scheduler.optimizer): c.scheduler for c in getattr(trainer, "lr_scheduler_configs", [])}
        applied: list[str] = []
        for o, (optimizer, fresh_groups) in enumerate(zip(trainer.optimizers, self._fresh or [])):
            scheduler = schedulers.get(id(optimizer))
            for g, (group, fresh) in enumerate(zip(optimizer.param_groups, fresh_groups)):
                name = f"optimizer {o} group {group.get('name', g)}"
                for key, value in fresh.items():
                    if key not in ("lr", "initial_lr") and group.get(key) != value:
                        applied.append(f"{name} {key} {_show(group.get(key))} -> {_show(value)}")
                        group[key] = value
                if scheduler is not None and "initial_lr" in fresh:
                    old = group.get("initial_lr", scheduler.base_lrs[g])
                    if fresh["initial_lr"] == old:
                        continue
                    group["initial_lr"] = scheduler.base_lrs[g] = fresh["initial_lr"]
                    if isinstance(scheduler, LambdaLR):
                        group["lr"] = fresh["initial_lr"] * scheduler.lr_lambdas[g](scheduler.last_epoch)
                    elif old:
                        group["lr"] = group["lr"] * fresh["initial_lr"] / old
                    if getattr(scheduler, "_last_lr", None) is not None:
                        scheduler._last_lr[g] = group["lr"]
                    applied.append(f"{name} base lr {_show(old)} -> {_show(fresh['initial_lr'])}")
                elif group["lr"] != fresh["lr"]:
                    applied.append(f"{name} lr {_show(group['lr'])} -> {_show(fresh['lr'])}")
                    group["lr"] = fresh["lr"]
        return applied


def _show(value: Any) -> str:
    return "(absent)" if type(value) is object else repr(value)
