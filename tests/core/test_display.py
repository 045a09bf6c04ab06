from __future__ import annotations

import torch

from syn2real.core.display import display_rgb, minmax_unit


def test_minmax_unit_scales_each_image_to_0_1() -> None:
    x = torch.stack([torch.linspace(-2, 3, 12).view(3, 2, 2), torch.full((3, 2, 2), 7.0)])
    y = minmax_unit(x)
    assert y[0].min().item() == 0.0 and y[0].max().item() == 1.0
    assert torch.equal(y[1], torch.zeros(3, 2, 2))  # a constant image: no division by zero


def test_display_rgb_repeats_grey_and_keeps_three_channels() -> None:
    grey = display_rgb(torch.randn(2, 1, 4, 4))
    assert grey.shape == (2, 3, 4, 4) and torch.equal(grey[:, 0], grey[:, 2])
    assert display_rgb(torch.randn(2, 4, 4, 4)).shape == (2, 3, 4, 4)
