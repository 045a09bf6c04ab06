"""RandConv: one view by hand, the weights' Kaiming scale, shapes that never move (safe for masks), RC_img's identity
probability, determinism under a seed, the consistency term in a method step, split BatchNorm (the main statistics
see only clean batches), bad arguments."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial import DualBatchNorm, RandConv, bn_route, random_conv
from syn2real.losses.consistency import js_divergence
from syn2real.methods import SourceOnly
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)


def test_one_view_by_hand() -> None:
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    out = random_conv(x, kernel_sizes=(1, 3), mixing=True, generator=torch.Generator().manual_seed(7))
    # the same draws in the same order: kernel size, weights, blend
    g = torch.Generator().manual_seed(7)
    k = (1, 3)[int(torch.randint(2, (1,), generator=g))]
    w = torch.randn(3, 3, k, k, generator=g) / math.sqrt(3 * k * k)
    alpha = float(torch.rand((), generator=g))
    conv = torch.zeros_like(x)  # the convolution written out, zero padding
    padded = F.pad(x, (k // 2,) * 4)
    for i in range(5):
        for j in range(5):
            patch = padded[:, :, i : i + k, j : j + k]  # (B, C_in, k, k)
            conv[:, :, i, j] = torch.einsum("bcuv,ocuv->bo", patch, w)
    assert torch.allclose(out, alpha * conv + (1 - alpha) * x, atol=1e-5)


def test_weights_have_the_kaiming_normal_scale() -> None:
    # C = 1, k = 1, no mixing: a view is w·x with w ~ N(0, 1 / (C k²)) = N(0, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.ones(1, 1, 1, 1)
    w = torch.stack([random_conv(x, (1,), mixing=False, generator=g).flatten() for _ in range(4000)])
    assert abs(w.mean().item()) < 0.05 and abs(w.std().item() - 1.0) < 0.05
    # C = 3, k = 5: each output value of a one-hot input is one weight, std 1 / sqrt(75)
    x = torch.zeros(1, 3, 9, 9)
    x[0, 0, 4, 4] = 1.0
    w = torch.stack([random_conv(x, (5,), mixing=False, generator=g)[0, :, 2:7, 2:7].flatten() for _ in range(300)])
    assert abs(w.std().item() - 1 / math.sqrt(75)) < 0.01


@pytest.mark.parametrize("mixing", [True, False])
def test_shapes_never_move(mixing: bool) -> None:
    # a one-pixel image spreads at most k // 2 = 3 pixels: a segmentation mask stays aligned
    x = torch.zeros(4, 3, 15, 15)
    x[:, :, 7, 7] = 1.0
    torch.manual_seed(0)
    for _ in range(20):
        out = random_conv(x, mixing=mixing)
        assert out.shape == x.shape
        support = out.abs().sum(dim=(0, 1)) > 0
        rows, cols = torch.nonzero(support, as_tuple=True)
        assert rows.min() >= 4 and rows.max() <= 10 and cols.min() >= 4 and cols.max() <= 10


def test_identity_probability_of_rc_img() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    same = sum(torch.equal(RandConv(mixing=False, identity_prob=0.5, weight=5.0).view(x), x) for _ in range(1000))
    assert 440 < same < 560
    assert not any(torch.equal(RandConv().view(x), x) for _ in range(50))


def test_deterministic_under_a_seed() -> None:
    x = torch.randn(3, 1, 28, 28)
    torch.manual_seed(5)
    a = [RandConv().view(x) for _ in range(4)]
    torch.manual_seed(5)
    b = [RandConv().view(x) for _ in range(4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])


def test_consistency_term_and_supervised_view() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1))  # dense (per-pixel) logits
    x, y = torch.randn(2, 1, 8, 8), torch.randint(0, 5, (2, 8, 8))
    aug = RandConv(weight=10.0)
    state = torch.get_rng_state()
    losses = aug.auxiliary_losses(model, x, y)
    torch.set_rng_state(state)
    views = [aug.view(x) for _ in range(3)]
    expected = 10.0 * js_divergence(list(model(torch.cat(views)).chunk(3)))
    assert torch.allclose(losses["randconv_jsd"], expected, atol=1e-6)
    x_sup, y_sup = aug(model, x, y)  # the supervised loss sees the first view of the consistency term
    assert torch.equal(x_sup, views[0]) and y_sup is y
    x_new, _ = aug(model, x, y)  # no pending view: a fresh one
    assert not torch.equal(x_new, views[0]) and x_new.shape == x.shape
    assert RandConv(weight=0.0).auxiliary_losses(model, x, y) == {}


def test_method_step_adds_the_term() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Classification(network=NET), augment=RandConv())
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (6,), generator=g)
    logged: dict[str, torch.Tensor] = {}
    method.log = lambda *a, **k: None  # type: ignore[method-assign]
    method.log_dict = lambda d, **k: logged.update(d)  # type: ignore[method-assign]
    loss = method.training_step({"source": (x, y), "target": (x, y, torch.arange(6))}, 0)
    assert logged["train/randconv_jsd"] > 0
    assert torch.allclose(loss, logged["train/source_ce"] + logged["train/randconv_jsd"], atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in method.model.parameters() if p.requires_grad)


def test_split_bn_losses_by_hand() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1))
    x, y = torch.randn(3, 1, 8, 8), torch.randint(0, 5, (3, 8, 8))
    y[0, :2] = 255  # unlabelled pixels are ignored
    aug = RandConv(weight=10.0, split_bn=True)
    with pytest.raises(RuntimeError, match="no dual BatchNorm"):
        aug.auxiliary_losses(model, x, y)
    aug.prepare(model)
    reference = copy.deepcopy(model)
    state = torch.get_rng_state()
    losses = aug.auxiliary_losses(model, x, y)
    torch.set_rng_state(state)
    views = [aug.view(x) for _ in range(3)]
    with bn_route(reference, "aux"):
        logits = reference(torch.cat(views)).chunk(3)
    assert torch.allclose(losses["randconv_ce"], F.cross_entropy(logits[0], y, ignore_index=255), atol=1e-6)
    assert torch.allclose(losses["randconv_jsd"], 10.0 * js_divergence(list(logits)), atol=1e-6)
    x_sup, y_sup = aug(model, x, y)  # the method's own loss: the clean batch
    assert x_sup is x and y_sup is y
    assert set(RandConv(weight=0.0, split_bn=True).auxiliary_losses(model, x, y)) == {"randconv_ce"}


def test_split_bn_keeps_the_main_statistics_clean() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Classification(network=NET), augment=RandConv(split_bn=True))
    assert any(isinstance(m, DualBatchNorm) for m in method.model.modules())  # prepare() ran when it was built
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (6,), generator=g)
    clean_only = copy.deepcopy(method.model)
    with torch.no_grad():
        clean_only(x)  # main route, the clean batch alone
    logged: dict[str, torch.Tensor] = {}
    method.log = lambda *a, **k: None  # type: ignore[method-assign]
    method.log_dict = lambda d, **k: logged.update(d)  # type: ignore[method-assign]
    loss = method.training_step({"source": (x, y), "target": (x, y, torch.arange(6))}, 0)
    terms = logged["train/source_ce"] + logged["train/randconv_ce"] + logged["train/randconv_jsd"]
    assert torch.allclose(loss, terms, atol=1e-6)
    pairs = [(m, r) for m, r in zip(method.model.modules(), clean_only.modules()) if isinstance(m, DualBatchNorm)]
    assert pairs
    for trained, clean in pairs:
        assert torch.allclose(trained.main.running_mean, clean.main.running_mean)
        assert torch.allclose(trained.main.running_var, clean.main.running_var)
        assert not torch.allclose(trained.aux.running_mean, clean.aux.running_mean)  # the views went there


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="odd sizes"):
        RandConv(kernel_sizes=[2])
    with pytest.raises(ValueError, match="identity_prob applies without mixing"):
        RandConv(mixing=True, identity_prob=0.5)
    with pytest.raises(ValueError, match="consistency weight"):
        RandConv(weight=-1)
    with pytest.raises(ValueError, match="no BatchNorm layer; RandConv's split_bn needs BatchNorm; set augment"):
        RandConv(split_bn=True).prepare(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match=r"image batches \(B, C, H, W\)"):
        random_conv(torch.zeros(2, 10))
