"""The global random states (python ``random``, numpy, torch CPU and CUDA): saved in checkpoints for an exact resume,
and preserved around work that must not change what a seeded run trains on (logging, pictures)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["preserved_rng", "rng_state", "set_rng_state"]


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
