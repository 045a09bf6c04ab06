"""Checkpoints that are written atomically and load with ``torch.load(weights_only=True)``, and the global random
states they carry so that a resumed run continues exactly as the uninterrupted one."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from syn2real.io import atomic_torch_save

__all__ = ["AtomicCheckpointIO", "RunCheckpoint", "ResumeRNG", "preserved_rng", "rng_state", "set_rng_state",
           "side_effect_free"]


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


def rng_state() -> dict[str, Any]:
    """The global random states (python ``random``, numpy, torch CPU, and CUDA once initialised) as tensors, tuples
    and numbers, so a checkpoint holding them still loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise RuntimeError(
                f"checkpoint holds CUDA random states of {len(state['cuda'])} devices, this process sees "
                f"{torch.cuda.device_count()}; resume on as many devices per process"
            )
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block without moving any global random stream (python, numpy, torch CPU and CUDA): logging and
    pictures must not change what a seeded run trains on."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@contextmanager
def side_effect_free(module: torch.nn.Module) -> Iterator[None]:
    """:func:`preserved_rng`, and the module's buffers (BatchNorm running statistics and counters) restored
    afterwards: a forward pass for a picture in training mode leaves the run exactly as it was."""
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
