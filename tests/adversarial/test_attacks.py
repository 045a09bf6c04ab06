"""FGSM / PGD / fast FGSM: the ball and the image range, pixel-space budgets, untouched model state, hand values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial import FGSM, PGD, FastFGSM
from syn2real.methods import SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def bn_model(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def batch(channels: int = 1, n: int = 8, mean=(0.5,), std=(0.5,)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(n, channels, 12, 12, generator=g)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (pixels - m) / s, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("channels,stats", [(1, {}), (3, IMAGENET)])
def test_pgd_stays_in_the_ball_and_the_image_range(norm: str, channels: int, stats: dict) -> None:
    model = bn_model(channels)
    x, y = batch(channels, **stats)
    eps = 0.3 if norm == "linf" else 1.5
    attack = PGD(epsilon=eps, step_size=0.1, steps=10, norm=norm, **stats)
    adv, y_adv = attack(model, x, y)
    mean, std = attack._stats(x)
    p, p_adv = x * std + mean, adv * std + mean
    delta = (p_adv - p).flatten(1)
    assert torch.equal(y_adv, y) and adv.shape == x.shape and not adv.requires_grad
    assert p_adv.min() >= -1e-6 and p_adv.max() <= 1 + 1e-6
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-5 and delta.abs().max() > 0.9 * eps
    else:
        assert (delta.norm(dim=1) <= eps + 1e-4).all()
    with torch.no_grad():
        assert F.cross_entropy(model.eval()(adv), y) > F.cross_entropy(model(x), y)


def test_attack_leaves_batchnorm_stats_grads_and_modes_untouched() -> None:
    model = bn_model()
    x, y = batch()
    model(x)  # materialise the lazy layer
    F.cross_entropy(model(x), y).backward()  # existing parameter gradients must survive
    grads = [p.grad.clone() for p in model.parameters()]
    bn = model[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    model.train()
    bn.eval()  # a frozen BatchNorm inside a training model: mixed modes are restored exactly
    PGD(epsilon=0.3, step_size=0.05, steps=5)(model, x, y)
    assert model.training and model[0].training and not bn.training
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_fgsm_on_a_linear_model_is_the_hand_formula() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.tensor([[[[0.2, -0.4], [0.6, 0.0]]]])  # normalised with mean = std = 0.5: pixels 0.6, 0.3, 0.8, 0.5
    y = torch.tensor([1])
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    pixels = x * 0.5 + 0.5
    expected = ((pixels + 0.1 * grad.sign()).clamp(0, 1) - 0.5) / 0.5
    adv, _ = FGSM(epsilon=0.1)(model, x, y)
    assert torch.allclose(adv, expected, atol=1e-6)


def test_fast_fgsm_and_concat_mode() -> None:
    model = bn_model()
    x, y = batch()
    torch.manual_seed(0)
    attack = FastFGSM(epsilon=0.2, mode="concat")
    assert attack.step_size == pytest.approx(0.25) and attack.random_start and attack.steps == 1
    out, labels = attack(model, x, y)
    assert out.shape[0] == 2 * x.shape[0] and torch.equal(out[: len(x)], x) and torch.equal(labels, torch.cat([y, y]))
    assert ((out[len(x):] - x) * 0.5).abs().max() <= 0.2 + 1e-6


def test_errors_and_method_plug_in() -> None:
    with pytest.raises(ValueError, match="norm"):
        PGD(norm="l1")
    with pytest.raises(ValueError, match="3 channels"):
        PGD(mean=(0.5, 0.5), std=(0.5, 0.5))(bn_model(3), *batch(3))
    method = SourceOnly(task=Classification(network=NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)),
                        augment=PGD(epsilon=0.3, step_size=0.1, steps=2))
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (4,))
    x_aug, _ = method.source_batch({"source": (x, y), "target": (x, y, torch.arange(4))})
    assert not torch.equal(x_aug, x) and ((x_aug - x) * 0.5).abs().max() <= 0.3 + 1e-6


@pytest.mark.slow
def test_augment_from_the_command_line(tmp_path) -> None:
    import json

    from conftest import REPO, config_args
    from test_cli import SMALL, run_cli

    run = tmp_path / "pgd"
    run_cli("fit", *config_args(REPO / "configs" / "digits" / "source_only.yaml"), *SMALL,
            "--model.init_args.augment",
            "{class_path: syn2real.adversarial.PGD, init_args: {epsilon: 0.3, step_size: 0.1, steps: 2}}",
            "--trainer.default_root_dir", str(run), cwd=tmp_path)
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 12
