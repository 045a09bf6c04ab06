"""Segmentation networks: shapes at output stride 8, the DeepLabV2 ASPP sum, frozen BatchNorm, parameter groups,
clear errors and local weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from syn2real.models.segmentation import ASPPClassifier, SegNetworkConfig, build_segmenter, upsample

TINY = dict(backbone="resnet18", num_classes=5, aspp_rates=[1, 2])


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter(SegNetworkConfig(**TINY)).eval()


def test_output_shapes_stride_8_and_input_size(net: nn.Module) -> None:
    x = torch.randn(2, 3, 48, 64)
    levels = net.forward_levels(x)
    assert len(levels) == 1 and levels[0].shape == (2, 5, 6, 8)
    assert net(x).shape == (2, 5, 48, 64)
    # sizes that are not multiples of 8 still come back at the input size
    assert net(torch.randn(1, 3, 37, 45)).shape == (1, 5, 37, 45)


def test_multi_level_gives_two_stride_8_levels() -> None:
    model = build_segmenter(SegNetworkConfig(**TINY, multi_level=True)).eval()
    levels = model.forward_levels(torch.randn(1, 3, 32, 32))
    assert [tuple(lv.shape) for lv in levels] == [(1, 5, 4, 4), (1, 5, 4, 4)]
    assert model.aux_classifier.branches[0].in_channels == 256  # resnet18 layer3
    assert model.classifier.branches[0].in_channels == 512


def test_fcn_head_shapes() -> None:
    model = build_segmenter(SegNetworkConfig(**{**TINY, "head": "fcn"}, fcn_channels=16)).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)


def test_aspp_is_the_sum_of_its_dilated_branches() -> None:
    torch.manual_seed(0)
    aspp = ASPPClassifier(4, 3, rates=(1, 2, 3))
    x = torch.randn(2, 4, 9, 9)
    by_hand = sum(F.conv2d(x, b.weight, b.bias, padding=r, dilation=r) for b, r in zip(aspp.branches, (1, 2, 3)))
    torch.testing.assert_close(aspp(x), by_hand)
    # DeepLabV2 init: N(0, 0.01) weights, zero bias, 3x3 kernels, the dilation rates as given
    assert [b.dilation for b in aspp.branches] == [(1, 1), (2, 2), (3, 3)]
    assert all(b.kernel_size == (3, 3) and torch.all(b.bias == 0) for b in aspp.branches)
    assert aspp.branches[0].weight.std() < 0.05
    with pytest.raises(ValueError, match="ASPP rates"):
        ASPPClassifier(4, 3, rates=(0, 2))


def test_frozen_batch_norm(net: nn.Module) -> None:
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.backbone.modules())
    # a ResNet without its fc: every remaining parameter is a conv kernel (BatchNorm affine terms became buffers)
    assert all(p.ndim == 4 for p in net.backbone.parameters())
    assert "bn1.weight" in dict(net.backbone.named_buffers()) and "layer2.0.downsample.1.weight" in dict(
        net.backbone.named_buffers())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        net.eval()
        a = net.backbone(x)[-1]
        net.train()
        b = net.backbone(x)[-1]
        net.eval()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batch_norm_not_frozen_when_asked() -> None:
    model = build_segmenter(SegNetworkConfig(**TINY, freeze_bn=False))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())


def test_param_groups_split_backbone_and_heads() -> None:
    model = build_segmenter(SegNetworkConfig(**TINY, multi_level=True))
    groups = model.param_groups()
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    assert ids["backbone"] == {id(p) for p in model.backbone.parameters()}
    head_params = list(model.classifier.parameters()) + list(model.aux_classifier.parameters())
    assert ids["head"] == {id(p) for p in head_params}
    assert not ids["backbone"] & ids["head"]
    assert ids["backbone"] | ids["head"] == {id(p) for p in model.parameters()}


def test_gradients_reach_backbone_and_head(net: nn.Module) -> None:
    model = build_segmenter(SegNetworkConfig(**TINY))
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert model.classifier.branches[0].weight.grad is not None
    assert model.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"head": "pspnet"}, "head must be 'deeplabv2', 'fcn' or 'daformer'"),
        ({"output_stride": 4}, "output_stride must be 8, 16 or 32"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_segmenter(SegNetworkConfig(**{**TINY, **kwargs}))


def test_backbone_without_features_only_names_the_backbone() -> None:
    with pytest.raises(ValueError, match="backbone 'digits_cnn' cannot be built with features_only"):
        build_segmenter(SegNetworkConfig(**{**TINY, "backbone": "digits_cnn"}))


def test_local_weight_file_is_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    file = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, file)
    model = build_segmenter(SegNetworkConfig(**TINY, weights=str(file)))
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"], rtol=0, atol=0)
    # BatchNorm statistics are loaded too (and then frozen)
    torch.testing.assert_close(model.backbone.bn1.running_var, state["bn1.running_var"], rtol=0, atol=0)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_segmenter(SegNetworkConfig(**TINY, weights=str(missing)))


def test_upsample_is_a_no_op_at_the_same_size() -> None:
    x = torch.randn(1, 3, 4, 4)
    assert upsample(x, (4, 4)) is x
    assert upsample(x, (8, 6)).shape == (1, 3, 8, 6)
