"""predictions.csv: one row per target image (its file, class index and name, confidence), the file complete and
its path printed when predict ends; per-rank files under DDP."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import torch

from syn2real.callbacks.predictions import PredictionsCSV


def _trainer(tmp_path: Path, world_size: int = 1, rank: int = 0) -> SimpleNamespace:
    base = SimpleNamespace(samples=[(tmp_path / f"img{i}.png", -1) for i in range(4)])
    dataset = SimpleNamespace(indices=[3, 2, 1, 0], base=base, classes=["cat", "dog", "eel"])
    return SimpleNamespace(world_size=world_size, global_rank=rank, is_global_zero=rank == 0,
                           default_root_dir=str(tmp_path / "eval" / "p"),
                           datamodule=SimpleNamespace(datasets={"target_predict": dataset}))


def test_rows_name_file_class_and_confidence_and_the_path_is_printed(tmp_path: Path, capsys) -> None:
    trainer, writer = _trainer(tmp_path), PredictionsCSV()
    writer.on_predict_start(trainer, None)
    for batch, indices in (({"pred": torch.tensor([2, 0]), "confidence": torch.tensor([0.9, 0.25])}, [0, 1]),
                           ({"pred": torch.tensor([1, 7]), "confidence": torch.tensor([0.5, 1.0])}, [2, 3])):
        writer.write_on_batch_end(trainer, None, batch, indices, None, 0, 0)
    writer.on_predict_end(trainer, None)
    path = tmp_path / "eval" / "p" / "predictions.csv"
    rows = list(csv.reader(path.open()))
    assert rows == [
        ["path", "pred", "class", "confidence"],
        [str(tmp_path / "img3.png"), "2", "eel", "0.900000"],
        [str(tmp_path / "img2.png"), "0", "cat", "0.250000"],
        [str(tmp_path / "img1.png"), "1", "dog", "0.500000"],
        [str(tmp_path / "img0.png"), "7", "7", "1.000000"],  # an index without a class name keeps the index
    ]
    assert f"predictions written to {path}" in capsys.readouterr().out


def test_each_rank_writes_its_own_file_under_ddp(tmp_path: Path, capsys) -> None:
    for rank in (1, 0):
        trainer, writer = _trainer(tmp_path, world_size=2, rank=rank), PredictionsCSV()
        writer.on_predict_start(trainer, None)
        writer.on_predict_end(trainer, None)
        out = capsys.readouterr().out
        assert (tmp_path / "eval" / "p" / f"predictions.rank{rank}.csv").read_text().strip() == "path,pred,class,confidence"
        assert out == ("" if rank else f"predictions written to {tmp_path / 'eval' / 'p' / 'predictions.rank*.csv'}\n")
