"""``--speed.*``: channels-last memory format and ``torch.compile`` for the networks a method trains."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

__all__ = ["SpeedOptions", "speed_modules"]

_PREFIXES = ("model", "generator", "discriminator")


def speed_modules(pl_module: nn.Module) -> dict[str, nn.Module]:
    """The networks a method runs every step: the task network ``model``, and its ``generator*`` and
    ``discriminator*`` networks (CyCADA, EnlightenGAN, ADDA, output-space adaptation)."""
    return {
        name: child for name, child in pl_module.named_children()
        if name.startswith(_PREFIXES) and isinstance(child, nn.Module)
    }


def _to_channels_last(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.contiguous(memory_format=torch.channels_last) if value.ndim == 4 else value
    if isinstance(value, tuple):
        return tuple(_to_channels_last(v) for v in value)
    if isinstance(value, list):
        return [_to_channels_last(v) for v in value]
    return value


class SpeedOptions(Callback):
    """Throughput options that do not change what is computed.

    Args:
        channels_last: store the 4-D weights of the task network, generators and discriminators in channels-last
            (NHWC) memory format, and the 4-D tensors of every training batch too (convolutions with channels-last
            weights would convert their input anyway; converting the batch once avoids a copy in the first layer).
            Fastest with tensor cores under ``bf16-mixed``/``16-mixed``.
        compile: compile the forward of the same networks with ``torch.compile`` (``nn.Module.compile``: in place,
            so parameter names and checkpoints stay those of the uncompiled networks; no ``_orig_mod.`` prefix).
            The first steps are slow while graphs compile.
        compile_mode: ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``); null = default.
        compile_backend: ``torch.compile`` backend (``inductor``; ``aot_eager`` for debugging).
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend
        self._compiled = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        modules = speed_modules(pl_module)
        if self.channels_last:
            for module in modules.values():
                module.to(memory_format=torch.channels_last)
        if self.compile and not self._compiled:
            for module in modules.values():
                module.compile(mode=self.compile_mode, backend=self.compile_backend)
            self._compiled = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.channels_last and isinstance(batch, dict):
            for key in list(batch):  # in place: Lightning hands this same dict to training_step
                batch[key] = _to_channels_last(batch[key])
