"""A callback for subprocess runs in tests: from a given step on, every training batch sleeps, so a test has time to
kill the run from outside while it is still mid-epoch (sleeping changes no number)."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback


class SlowAfterStep(Callback):
    def __init__(self, step: int = 10, seconds: float = 0.5) -> None:
        self.step = step
        self.seconds = seconds

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            time.sleep(self.seconds)
