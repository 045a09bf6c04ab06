"""Checkpoints that are written atomically and load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from syn2real.io import atomic_torch_save

__all__ = ["AtomicCheckpointIO", "RunCheckpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic local writes, ``weights_only=True`` loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:
            raise ValueError(
                f"cannot load checkpoint {path} with weights_only=True ({err}); expected a syn2real/Lightning checkpoint"
            ) from err


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes to ``<trainer.default_root_dir>/checkpoints`` unless ``dirpath`` is set,
    and keeps ``last.ckpt`` by default (for ``--ckpt_path last``)."""

    def __init__(self, dirpath: str | None = None, save_last: bool | None = True, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, save_last=save_last, **kwargs)

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)
