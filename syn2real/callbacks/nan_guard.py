"""``--nan_guard.*``: the switch of the NaN/inf guard (:mod:`syn2real.core.guard`), and an optional gradient check."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from syn2real.core.guard import ADVICE, NonFiniteGradientError, describe_checkpoint, last_good_checkpoint

__all__ = ["NaNGuard"]


class NaNGuard(Callback):
    """Stop training at the first non-finite loss term (and, with ``check_grads``, gradient) before the optimizer
    applies it; the last good checkpoint stays on disk.

    Args:
        enabled: check every loss term of every training step (one device sync per step); ``false`` turns the
            guard off.
        check_grads: also check every gradient after backward (``on_before_optimizer_step``: after the unscaling of
            16-mixed) and name the first parameter with a non-finite one. Skipped while a 16-mixed gradient scaler is
            active: the scaler itself skips steps with inf gradients and lowers its scale, which is normal.
    """

    def __init__(self, enabled: bool = True, check_grads: bool = False) -> None:
        self.enabled = enabled
        self.check_grads = check_grads

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.nan_guard = self.enabled

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not (self.enabled and self.check_grads):
            return
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [(n, p) for n, p in pl_module.named_parameters() if p.grad is not None and id(p) in in_optimizer]
        if not params:
            return
        flags = torch.stack([torch.isfinite(p.grad).all() for _, p in params])
        if bool(flags.all()):
            return
        name = next(n for (n, _), ok in zip(params, flags.tolist()) if not ok)
        raise NonFiniteGradientError(
            f"non-finite gradient of parameter '{name}' at global step {trainer.global_step} "
            f"(method {type(pl_module).__name__}); {describe_checkpoint(last_good_checkpoint(trainer))} — {ADVICE}"
        )
