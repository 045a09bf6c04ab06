"""DANN, CDAN and ADDA: loss composition, gradient reversal, discriminator inputs, ADDA's frozen parts and gate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from syn2real.losses.adversarial import domain_adversarial_loss, grl_lambda
from syn2real.methods import ADDA, CDAN, DANN, OptimConfig, SourceOnly
from syn2real.tasks import Classification
from syn2real.models.checkpoint import load_model_weights
from syn2real.models.discriminators import DiscriminatorConfig
from syn2real.models.heads import NetworkConfig

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)


def batch(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    xs, xt = torch.randn(n, 1, 28, 28, generator=g), torch.randn(n, 1, 28, 28, generator=g) + 0.5
    ys = torch.randint(0, 10, (n,), generator=g)
    return {"source": (xs, ys), "target": (xt, torch.full((n,), -1), torch.arange(n))}


def test_dann_loss_is_ce_plus_weighted_domain_loss_and_grl_reverses_feature_gradient() -> None:
    torch.manual_seed(0)
    method = DANN(task=Classification(network=NET), adv_weight=0.5, grl_schedule="constant",
                  discriminator=DiscriminatorConfig(preset="dann_small"))
    method.eval()  # deterministic (no dropout); BatchNorm uses running stats, fine for the algebra
    b = batch()
    out = method.compute_losses(b)
    assert torch.allclose(out["loss"], out["source_ce"] + 0.5 * out["domain_loss"])

    # gradient reversal: the domain term's gradient w.r.t. the features is the negative of the plain one
    feats = method.model.forward_features(torch.cat([b["source"][0], b["target"][0]])).detach().requires_grad_(True)
    d = method.discriminator
    (g_plain,) = torch.autograd.grad(domain_adversarial_loss(d(feats[:8]), d(feats[8:])), feats)
    from syn2real.losses.adversarial import grad_reverse

    rev = grad_reverse(feats, 0.3)
    (g_rev,) = torch.autograd.grad(domain_adversarial_loss(d(rev[:8]), d(rev[8:])), feats)
    assert torch.allclose(g_rev, -0.3 * g_plain, atol=1e-7)


def test_dann_grl_schedule_and_warmup() -> None:
    method = DANN(task=Classification(network=NET), adv_warmup_steps=10)
    steps = {step: method.grl_coefficient(step, total_steps=110) for step in (0, 9, 10, 60, 110)}
    assert steps[0] == steps[9] == 0.0 and steps[10] == 0.0
    assert steps[60] == pytest.approx(grl_lambda(0.5)) and steps[110] == pytest.approx(grl_lambda(1.0))
    assert DANN(task=Classification(network=NET), grl_schedule="constant").grl_coefficient(0, 100) == 1.0


def test_dann_defaults_are_the_papers_and_discriminator_is_optimised() -> None:
    method = DANN(task=Classification(network=NET))
    cfg = method.optim_cfg
    assert (cfg.name, cfg.lr, cfg.momentum, cfg.scheduler, cfg.gamma, cfg.inv_power) == ("sgd", 0.01, 0.9, "inv", 10.0, 0.75)
    assert method.discriminator.hidden == (1024, 1024) and method.discriminator.in_features == 128
    names = [g["name"] for g in method.param_groups()]
    assert names == ["backbone", "head", "discriminator"]


def test_cdan_multilinear_and_randomized_inputs() -> None:
    full = CDAN(task=Classification(network=NET))
    assert full.multilinear is None and full.discriminator.in_features == 128 * 10
    feats, logits = torch.randn(4, 128), torch.randn(4, 10)
    h, w = full.domain_inputs(feats, logits)
    probs = logits.softmax(1)
    assert torch.allclose(h[1].view(128, 10), torch.outer(feats[1], probs[1]), atol=1e-6)
    assert torch.allclose(w, 1 + torch.exp((probs * probs.log()).sum(1)), atol=1e-6)
    # above 4096 multilinear dimensions the randomized map of dimension 1024 is used
    wide = CDAN(task=Classification(network=NetworkConfig(num_classes=10, in_chans=1, bottleneck_dim=512)))
    assert wide.multilinear is not None and wide.discriminator.in_features == 1024
    wide.eval()
    out = wide.compute_losses(batch())
    assert torch.isfinite(out["loss"]) and out["domain_loss"] > 0
    assert CDAN(task=Classification(network=NET), entropy_conditioning=False).domain_inputs(feats, logits)[1] is None


@pytest.fixture()
def source_ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(1)
    model = SourceOnly(task=Classification(network=NET))
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_load_model_weights_errors(tmp_path: Path, source_ckpt: Path) -> None:
    model = SourceOnly(task=Classification(network=NET)).model
    load_model_weights(model, str(source_ckpt))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_weights(model, str(tmp_path / "missing.ckpt"))
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_model_weights(model, str(tmp_path / "bad.ckpt"))
    other = SourceOnly(task=Classification(network=NetworkConfig(num_classes=3, in_chans=1))).model
    with pytest.raises(ValueError, match="does not fit the task network"):
        load_model_weights(other, str(source_ckpt))


def _adda_steps(method: ADDA, steps: int) -> None:
    """Run ADDA's manual-optimisation training step outside a Trainer."""
    enc = method.build_optimizer(method.param_groups())
    disc = method.build_optimizer(
        [{"params": list(method.discriminator.parameters()), "lr": method.disc_optim_cfg.lr}], method.disc_optim_cfg
    )
    opts = [enc, disc]
    method.optimizers = lambda: opts  # type: ignore[method-assign]
    method.manual_backward = lambda loss: loss.backward()  # type: ignore[method-assign]
    method.lr_schedulers = lambda: None  # type: ignore[method-assign]
    method.log = method.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
    method.train()
    for i in range(steps):
        method.training_step(batch(seed=i), i)


def test_adda_freezes_source_encoder_and_classifier_and_trains_target_encoder(source_ckpt: Path) -> None:
    method = ADDA(task=Classification(network=NET), source_checkpoint=str(source_ckpt), gate_accuracy=None)
    src = {k: v.clone() for k, v in method.source_model.state_dict().items()}
    head = {k: v.clone() for k, v in method.model.head.state_dict().items()}
    enc = {k: v.clone() for k, v in method.model.backbone.state_dict().items()}
    assert all(torch.equal(enc[k], src[f"backbone.{k}"]) for k in enc)  # initialised from the source encoder
    assert method.discriminator.hidden == (500, 500) and method.optim_cfg.betas == (0.5, 0.999)
    _adda_steps(method, 3)
    assert all(torch.equal(v, src[k]) for k, v in method.source_model.state_dict().items())
    assert all(torch.equal(v, head[k]) for k, v in method.model.head.state_dict().items())
    assert any(not torch.equal(v, enc[k]) for k, v in method.model.backbone.state_dict().items() if v.is_floating_point())
    assert not method.source_model.training  # frozen BatchNorm even in train()


def test_adda_gate_blocks_encoder_updates_while_discriminator_is_behind(source_ckpt: Path) -> None:
    method = ADDA(task=Classification(network=NET), source_checkpoint=str(source_ckpt), gate_accuracy=0.999)
    enc = {k: v.clone() for k, v in method.model.backbone.named_parameters()}
    _adda_steps(method, 2)  # a fresh discriminator is never 99.9 % right on random batches
    assert all(torch.equal(v, enc[k]) for k, v in method.model.backbone.named_parameters())


def test_adda_logits_variant_uses_cycada_discriminator(source_ckpt: Path) -> None:
    method = ADDA(task=Classification(network=NET), source_checkpoint=str(source_ckpt), align="logits")
    assert method.discriminator.in_features == 10 and method.discriminator.out_features == 2
    with pytest.raises(ValueError, match="align"):
        ADDA(task=Classification(network=NET), align="pixels")  # type: ignore[arg-type]


def test_optim_override_keeps_method_defaults_separate() -> None:
    assert DANN(task=Classification(network=NET), optim=OptimConfig(name="adam", lr=1e-3)).optim_cfg.name == "adam"
    assert CDAN(task=Classification(network=NET)).optim_cfg.nesterov is True
