"""DAFormer's optimiser: AdamW 6e-5 (head ×10), weight decay 0.01 except on norm and position-embedding parameters,
mmcv's linear warm-up (1,500 steps from 1e-6) scaling a poly-1.0 schedule; the default settings unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from syn2real.methods import OptimConfig, SourceOnly
from syn2real.methods.optim import build_optimizer, build_schedule, daformer_optim, lr_lambda, split_no_decay
from syn2real.models.segmentation import SegNetworkConfig
from syn2real.tasks import Segmentation

VIT = SegNetworkConfig(backbone="vit_tiny_patch16_224", num_classes=5, head="daformer", daformer_channels=8,
                       backbone_kwargs=dict(img_size=32, depth=4, embed_dim=32, num_heads=2))


@pytest.fixture(scope="module")
def method() -> SourceOnly:
    torch.manual_seed(0)
    return SourceOnly(task=Segmentation(network=VIT), optim=daformer_optim())


def test_preset_values() -> None:
    cfg = daformer_optim()
    assert cfg.name == "adamw" and cfg.weight_decay == 0.01 and tuple(cfg.betas) == (0.9, 0.999)
    assert cfg.lr * cfg.backbone_lr_mult == pytest.approx(6e-5) and cfg.lr == pytest.approx(6e-4)  # head x10
    assert (cfg.scheduler, cfg.power, cfg.warmup_steps, cfg.warmup_ratio) == ("poly", 1.0, 1500, 1e-6)


def test_groups_lr_and_decay(method: SourceOnly) -> None:
    opt = method.build_optimizer(method.param_groups())
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["backbone", "backbone.no_decay", "head", "head.no_decay"]
    assert [groups[n]["lr"] for n in groups] == pytest.approx([6e-5, 6e-5, 6e-4, 6e-4])
    assert [groups[n]["weight_decay"] for n in groups] == [0.01, 0.0, 0.01, 0.0]
    names = {id(p): n for n, p in method.named_parameters()}
    no_decay = {names[id(p)] for n in ("backbone.no_decay", "head.no_decay") for p in groups[n]["params"]}
    decay = {names[id(p)] for n in ("backbone", "head") for p in groups[n]["params"]}
    # exactly the norm layers' weights and biases and the position embedding
    vit = "model.backbone.vit."
    expected_backbone = {vit + "pos_embed", vit + "norm.weight", vit + "norm.bias"} | {
        f"{vit}blocks.{b}.norm{i}.{w}" for b in range(4) for i in (1, 2) for w in ("weight", "bias")}
    assert {n for n in no_decay if n.startswith(vit)} == expected_backbone
    # the adapter's LayerNorm (named norm: no decay); the head's BatchNorms are named bn (decayed, as in mmseg)
    assert {n for n in no_decay if not n.startswith(vit)} == {"model.neck.up4.norm.weight", "model.neck.up4.norm.bias"}
    assert all("norm" not in n and "pos_embed" not in n for n in decay)
    assert vit + "cls_token" in decay and vit + "blocks.0.attn.qkv.bias" in decay  # other biases keep their decay
    assert "model.classifier.fuse.bottleneck.bn.weight" in decay
    assert decay | no_decay == set(names.values()) and not decay & no_decay


def test_warmup_then_poly_by_hand() -> None:
    cfg = daformer_optim()
    total = 40_000
    f = lr_lambda(cfg, total)
    # mmcv: lr = poly(t) * (1 - (1 - t / 1500) * (1 - 1e-6)) during the warm-up, poly(t) = 1 - t / 40000
    assert f(0) == pytest.approx(1e-6, rel=1e-9)
    assert f(750) == pytest.approx((1 - 750 / total) * (0.5 + 0.5e-6), rel=1e-12)
    assert f(1500) == pytest.approx(1 - 1500 / total, rel=1e-12)
    assert f(20_000) == pytest.approx(0.5, rel=1e-12)
    assert f(total) == 0.0
    # the optimiser's lr after Lightning-style per-step scheduling
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [p], "lr": 6e-4}], OptimConfig(name="adamw", lr=6e-4))
    sched = build_schedule(opt, cfg, total)
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-4 * 1e-6)
    for _ in range(750):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-4 * (1 - 750 / total) * (0.5 + 0.5e-6))


def test_default_settings_are_unchanged() -> None:
    # the prefix warm-up as before: (t + 1) / W, then the schedule over the remaining steps
    f = lr_lambda(OptimConfig(scheduler="poly", power=0.9, warmup_steps=4), total_steps=14)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(9) == (1 - 5 / 10) ** 0.9 and f(14) == 0.0
    method = SourceOnly(optim=OptimConfig(name="sgd", lr=0.1, backbone_lr_mult=0.1))
    groups = method.param_groups()
    opt = method.build_optimizer(groups)
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4]
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [[id(p) for p in g["params"]] for g in groups]
    # without no_decay_keys the names are not needed
    plain = build_optimizer([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}], OptimConfig())
    assert len(plain.param_groups) == 1


def test_clear_errors() -> None:
    p = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="no_decay_keys needs the parameters' names"):
        build_optimizer([{"params": [p], "lr": 1.0}], daformer_optim())
    with pytest.raises(ValueError, match="not among the module's named parameters"):
        split_no_decay([{"params": [p], "name": "x"}], ["norm"], [])
    with pytest.raises(ValueError, match="non-empty strings"):
        split_no_decay([{"params": [p]}], [""], [("w", p)])
    with pytest.raises(ValueError, match="warmup_ratio .* only used with warmup_mode: scale"):
        lr_lambda(OptimConfig(warmup_steps=3, warmup_ratio=0.1), 10)
    with pytest.raises(ValueError, match="warmup_mode must be"):
        lr_lambda(OptimConfig(warmup_mode="cosine"), 10)  # type: ignore[arg-type]
