"""Pictures for W&B must not change the run: no random draws, no BatchNorm statistics updated by their forwards."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from syn2real.callbacks.checkpoint import side_effect_free
from syn2real.core.rng import preserved_rng
from syn2real.callbacks.wandb_media import WandbMedia


def test_preserved_rng_restores_every_stream() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    with preserved_rng():
        torch.rand(100), np.random.rand(100), random.random()
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


class Pictured(nn.Module):
    """A method double whose picture is a training-mode forward through BatchNorm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Dropout(0.5))

    def training_media(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.net(batch["x"])
        return {"method/picture": out[:, :1].sigmoid().unsqueeze(0)}


def test_method_pictures_leave_batchnorm_and_rng_untouched(tmp_path: Path) -> None:
    module = Pictured().train()
    batch = {"x": torch.randn(2, 1, 8, 8) + 3}
    buffers = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), loggers=[], global_step=0)
    WandbMedia(every_n_steps=1)._log_method_media(trainer, module, batch)
    assert (tmp_path / "media" / "method_picture.png").is_file()
    assert torch.equal(torch.rand(4), expected)
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in buffers.items())
    with side_effect_free(module):  # the same forward outside: the statistics do move
        module.net(torch.randn(2, 1, 8, 8) + 3)
        assert not torch.equal(module.net[1].running_mean, buffers["net.1.running_mean"])
    assert torch.equal(module.net[1].running_mean, buffers["net.1.running_mean"])
