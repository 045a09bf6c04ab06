"""What the self-training round tests share (CBST/CRST and DRST): a small random digits set like ``target_predict``,
the digits network without BatchNorm, and a stand-in trainer for calling the round callback directly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import Dataset

from syn2real.models.heads import NetworkConfig

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1, backbone_kwargs={"batch_norm": False})


class Digits(Dataset):
    """Random 28 px images with labels, like ``target_predict``."""

    def __init__(self, n: int = 37) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 28, 28, generator=g)
        self.targets = torch.randint(0, 10, (n,), generator=g).tolist()
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


def fake_trainer(tmp_path: Path, dataset: Dataset, epoch: int = 0) -> SimpleNamespace:
    dm = SimpleNamespace(datasets={"target_predict": dataset}, eval_batch_size=8)
    return SimpleNamespace(world_size=1, global_rank=0, datamodule=dm, current_epoch=epoch, is_global_zero=True,
                           default_root_dir=str(tmp_path))
