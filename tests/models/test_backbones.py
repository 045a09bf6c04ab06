from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from syn2real.models.backbones import create_backbone
from syn2real.models.heads import NetworkConfig, build_classifier

# Small timm models across families: every one must expose the seams the methods use.
TIMM_MODELS = ["digits_cnn", "resnet18", "tf_efficientnet_lite0", "convnext_atto"]


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_registry_models_share_the_seams(name: str) -> None:
    in_chans = 1 if name == "digits_cnn" else 3
    size = 28 if name == "digits_cnn" else 32
    model = timm.create_model(name, pretrained=False, num_classes=5, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, size, size)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.num_features)
    assert model.forward_head(feats).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_digits_cnn_handles_28_and_32_px() -> None:
    model = create_backbone("digits_cnn", num_classes=10, in_chans=3)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert model(torch.randn(3, 3, 28, 28)).shape == (3, 10)


def test_unknown_backbone_and_missing_weights_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net")
    missing = tmp_path / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        create_backbone("resnet18", weights=str(missing))


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    src = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    model = create_backbone("resnet18", weights=str(path), num_classes=0)
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    digits = create_backbone("digits_cnn", num_classes=10)
    torch.save(digits.state_dict(), tmp_path / "digits.pth")
    again = create_backbone("digits_cnn", weights=str(tmp_path / "digits.pth"), num_classes=3)
    assert torch.equal(again.features[0][0].weight, digits.features[0][0].weight)
    assert again.head.out_features == 3


def test_classifier_with_bottleneck_and_param_groups() -> None:
    net = build_classifier(NetworkConfig(backbone="digits_cnn", num_classes=4, bottleneck_dim=16))
    logits, feats = net(torch.randn(5, 1, 28, 28), return_features=True)
    assert logits.shape == (5, 4) and feats.shape == (5, 16)
    groups = net.param_groups()
    n_params = sum(1 for _ in net.parameters())
    assert len(groups["backbone"]) + len(groups["head"]) == n_params
    assert all(p is not q for p in groups["backbone"] for q in groups["head"])
