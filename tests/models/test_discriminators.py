from __future__ import annotations

import pytest
import torch
from torch import nn

from syn2real.losses.adversarial import (
    adda_target_loss,
    domain_adversarial_loss,
    grad_reverse,
)
from syn2real.models.discriminators import (
    DISCRIMINATOR_PRESETS,
    ConvDiscriminator,
    MLPDiscriminator,
    build_discriminator,
)


def linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(
    ("preset", "in_features", "sizes", "n_bn", "n_dropout"),
    [
        ("adda", 500, [(500, 500), (500, 500), (500, 1)], 0, 0),
        ("cycada_logits", 10, [(10, 500), (500, 500), (500, 2)], 0, 0),
        ("dann", 256, [(256, 1024), (1024, 1024), (1024, 1)], 0, 2),
        ("dann_bn", 256, [(256, 1024), (1024, 1024), (1024, 1)], 2, 0),
        ("dann_small", 48, [(48, 100), (100, 1)], 0, 0),
    ],
)
def test_presets_layer_sizes(preset: str, in_features: int, sizes: list, n_bn: int, n_dropout: int) -> None:
    d = build_discriminator(preset, in_features)  # type: ignore[arg-type]
    assert linear_sizes(d) == sizes
    assert count(d, nn.BatchNorm1d) == n_bn
    assert count(d, nn.Dropout) == n_dropout
    assert count(d, nn.Sigmoid) == 0  # logits out
    if n_dropout:
        assert all(m.p == 0.5 for m in d.modules() if isinstance(m, nn.Dropout))
    out = d.eval()(torch.randn(3, in_features))
    assert out.shape == (3, sizes[-1][1])


def test_presets_table_and_unknown_preset() -> None:
    assert set(DISCRIMINATOR_PRESETS) == {"adda", "cycada_logits", "dann", "dann_bn", "dann_small"}
    with pytest.raises(ValueError, match="unknown discriminator preset 'gan'"):
        build_discriminator("gan", 10)  # type: ignore[arg-type]


def test_mlp_block_order_and_validation() -> None:
    d = MLPDiscriminator(8, hidden=(16,), out_features=2, dropout=0.1, batch_norm=True)
    kinds = [type(m) for m in d.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8\), got \(4, 7\)"):
        d(torch.randn(4, 7))
    with pytest.raises(ValueError, match="dropout must be in"):
        MLPDiscriminator(8, dropout=1.0)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        MLPDiscriminator(8, hidden=(0,))


def test_mlp_discriminator_gradients_reach_features_through_grl() -> None:
    torch.manual_seed(0)
    d = build_discriminator("dann_bn", 12)
    f_s = torch.randn(4, 12, requires_grad=True)
    f_t = torch.randn(5, 12, requires_grad=True)
    logits = d(grad_reverse(torch.cat([f_s, f_t]), 1.0))
    loss = domain_adversarial_loss(logits[:4], logits[4:])
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    # GRL: the features receive the negative of the discriminator's own gradient
    f = torch.cat([f_s, f_t]).detach().requires_grad_()
    d.zero_grad()
    (g_plain,) = torch.autograd.grad(domain_adversarial_loss(*d(f).split([4, 5])), f)
    assert torch.allclose(torch.cat([f_s.grad, f_t.grad]), -g_plain, atol=1e-6)


def test_cycada_two_logit_discriminator_with_adda_loss() -> None:
    d = build_discriminator("cycada_logits", 10)
    z = torch.randn(6, 10, requires_grad=True)
    adda_target_loss(d(z)).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_conv_discriminator_shapes_and_gradients() -> None:
    d = ConvDiscriminator(in_channels=19)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(19, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    x = torch.softmax(torch.randn(2, 19, 64, 96), dim=1).requires_grad_()
    out = d(x)
    assert out.shape == (2, 1, 2, 3)  # /32
    adda_target_loss(out).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    small = ConvDiscriminator(3, channels=(8, 16), out_channels=2)
    assert small(torch.randn(1, 3, 16, 16)).shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 19, H, W\), got \(2, 3, 8, 8\)"):
        d(torch.randn(2, 3, 8, 8))
