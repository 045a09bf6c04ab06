from __future__ import annotations

import pytest
import torch
from torch import nn

from syn2real.core.tiling import tiled_forward


class PooledNet(nn.Module):
    """A 3x3 conv, a 2x2 average pool and back: its output depends on the pooling grid (``multiple`` = 2)."""

    multiple = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(torch.repeat_interleave(nn.functional.avg_pool2d(self.conv(x), 2), 2, 2), 2, 3)


def test_tiles_with_context_equal_the_whole_image() -> None:
    torch.manual_seed(0)
    net = PooledNet().eval()
    x = 10 * torch.randn(1, 1, 22, 30)  # not clamped: values far outside [-1, 1] come back as they are
    whole = net(x)
    assert torch.allclose(tiled_forward(net, x, tile=12, overlap=4), whole, atol=1e-5)
    assert whole.abs().max() > 1


def test_tile_smaller_than_its_context_is_an_error() -> None:
    with pytest.raises(ValueError, match="must exceed 2 x overlap"):
        tiled_forward(PooledNet(), torch.zeros(1, 1, 40, 40), tile=8, overlap=4)
