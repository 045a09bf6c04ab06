"""``metrics.json`` in the run directory after every fit / validate / test, plus a summary table."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from syn2real.core.interfaces import SupportsRunSummary
from syn2real.io import write_json_atomic

__all__ = ["MetricsJSON", "code_record"]

_PREFIXES = ("target/", "source/", "translation/", "teacher/")  # teacher/: a mean teacher scored beside its student


_CODE_PATHS = ("syn2real", "configs", "data_prep", "pyproject.toml", "requirements.lock")


@functools.lru_cache(maxsize=1)
def _git_commit() -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes to the package's tracked code, configs or pins) of the checkout syn2real runs
    from; (None, None) for an installed package or without git. Documentation edits do not count."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                 *_CODE_PATHS], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def code_record() -> dict[str, Any]:
    """What produced a run's numbers: syn2real's version and git commit (with ``dirty``: its code, configs or pins
    changed since), torch's version and the intra-op thread count (the order of floating-point sums, so the last
    digits, depend on it)."""
    import syn2real

    commit, dirty = _git_commit()
    return {"syn2real": syn2real.__version__, "commit": commit, "dirty": dirty, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    return float(value) if isinstance(value, (int, float)) else None


class MetricsJSON(L.Callback):
    """Writes the final evaluation metrics (``target/acc``, ``target/acc_class_mean``, ``target/ece``,
    ``target/acc_class/<name>``, ``source/...``, CyCADA's ``translation/...``) with stable names to
    ``<default_root_dir>/<filename>``, plus whatever the method's ``run_summary()`` returns (self-training:
    ``self_training_rounds``), and ``code``: the syn2real version and git commit, the torch version and the intra-op
    thread count that produced the numbers.

    Args:
        filename: file name inside ``trainer.default_root_dir``.
        print_summary: print a table of the main metrics at the end (rank 0).
    """

    def __init__(self, filename: str = "metrics.json", print_summary: bool = True) -> None:
        self.filename = filename
        self.print_summary = print_summary
        self._start = time.time()
        self.next_stage: str | None = None  # label of the next write (the CLI's final validation of a fit)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.next_stage is None:
            self._start = time.time()

    def collect(self, trainer: L.Trainer) -> dict[str, float | None]:
        """Logged evaluation scalars; NaN (e.g. the IoU of a class absent from labels and predictions) becomes None,
        written as JSON ``null``."""
        out: dict[str, float | None] = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(_PREFIXES):
                scalar = _scalar(value)
                if scalar is not None:
                    out[key] = None if math.isnan(scalar) else scalar
        return out

    @rank_zero_only
    def _write(self, trainer: L.Trainer, stage: str) -> None:
        metrics = self.collect(trainer)
        data: dict[str, Any] = {
            **metrics,
            "stage": stage,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
            "world_size": trainer.world_size,
            "wall_time_s": round(time.time() - self._start, 2),
            "code": code_record(),
        }
        # methods may add structured records, e.g. self-training's per-round pseudo-label statistics
        module = trainer.lightning_module
        if isinstance(module, SupportsRunSummary):
            data.update(module.run_summary())
        path = Path(trainer.default_root_dir) / self.filename
        write_json_atomic(data, path)
        # a fit whose last steps were not evaluated is evaluated once more by the CLI, which then prints the table
        # MethodInterface.last_eval_step; a module without it counts as evaluated
        evaluated_last = getattr(module, "last_eval_step", trainer.global_step) == trainer.global_step
        if self.print_summary and (stage != "fit" or evaluated_last or trainer.interrupted):
            self._print(metrics, stage, path)

    @staticmethod
    def _print(metrics: dict[str, float | None], stage: str, path: Path) -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        shown = {k: v for k, v in metrics.items() if v is not None and "/acc_class/" not in k and "/iou/" not in k}
        if not shown:
            print(f"metrics written to {path}", flush=True)
            return
        table = Table(title=f"syn2real {stage}: final metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in sorted(shown):
            value = shown[key]
            rate = any(t in key for t in ("/acc", "/flip", "/teacher_acc", "/miou", "/pixel_acc"))
            table.add_row(key, f"{100 * value:.2f} %" if rate else f"{value:.4f}")
        console.print(table)
        print(f"metrics written to {path}", flush=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "fit")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, self.next_stage or "validate")
            self.next_stage = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test")
