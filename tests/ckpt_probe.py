"""A callback for subprocess runs in tests: at the start of a given global step, record which step
``checkpoints/last.ckpt`` holds (or -1 when there is none) in a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


class LastCheckpointProbe(Callback):
    def __init__(self, step: int, out: str) -> None:
        self.step = step
        self.out = out

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        held = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"]) if last.is_file() else -1
        Path(self.out).write_text(json.dumps({"at_step": self.step, "last_ckpt_step": held}))
