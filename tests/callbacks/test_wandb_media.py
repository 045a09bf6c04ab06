"""The W&B per-class table: a class without labels has no accuracy (None, as in metrics.json), not 0 %."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from syn2real.callbacks.wandb_media import WandbMedia


class TableLogger:
    def __init__(self) -> None:
        self.tables: dict[str, tuple[list[str], list[list[Any]]]] = {}

    def log_table(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
        self.tables[key] = (columns, data)


def test_per_class_table_leaves_absent_classes_without_accuracy(tmp_path: Path) -> None:
    logger = TableLogger()
    trainer = SimpleNamespace(loggers=[logger], default_root_dir=str(tmp_path), global_step=3, current_epoch=0)
    # rows: true class; class 2 has no labels but is predicted once
    confusion = torch.tensor([[3, 1, 0], [0, 2, 1], [0, 0, 0]])
    module = SimpleNamespace(last_confusion={"target": confusion}, eval_metrics={})
    WandbMedia(save_confusion_png=False)._log_eval(trainer, module, "validate")
    columns, rows = logger.tables["target/per_class"]
    assert columns == ["class", "n", "acc %"]
    assert rows == [["0", 4, 75.0], ["1", 3, 66.67], ["2", 0, None]]
