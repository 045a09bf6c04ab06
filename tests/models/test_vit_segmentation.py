"""ViT backbones for segmentation and the DAFormer head: level strides 4/8/16/32, padding to the patch and cropping
back, logits at stride 4, gradients into backbone/adapter/head, weight files loaded bit-exactly and strictly, and the
DAFormer decoder's structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from syn2real.models.segmentation import DAFormerHead, SegNetworkConfig, SeparableASPP, build_segmenter
from syn2real.models.vit_features import ViTBackbone, create_vit_backbone, default_vit_blocks, is_vit, pad_to_multiple

# a 4-block, 32-dim ViT with 16-px patches (the registry's vit_tiny, shrunk)
TINY_VIT = dict(img_size=32, depth=4, embed_dim=32, num_heads=2)
VIT = dict(backbone="vit_tiny_patch16_224", num_classes=5, head="daformer", daformer_channels=16,
           backbone_kwargs=TINY_VIT)


@pytest.fixture(scope="module")
def vit_net() -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter(SegNetworkConfig(**VIT)).eval()


def test_vit_detection_and_default_blocks() -> None:
    assert is_vit("vit_small_patch14_dinov2") and is_vit("vit_base_patch16_224") and is_vit("deit_tiny_patch16_224")
    assert not is_vit("resnet18") and not is_vit("not_a_model")
    assert default_vit_blocks(12) == [2, 5, 8, 11]
    assert default_vit_blocks(24) == [5, 11, 17, 23]
    assert default_vit_blocks(4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least 4 blocks"):
        default_vit_blocks(3)


def test_vit_levels_are_strides_4_8_16_32(vit_net: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 96)
    raw = vit_net.backbone_features(x)
    assert [tuple(f.shape) for f in raw] == [(2, 32, 4, 6)] * 4  # the patch grid, embed_dim channels
    levels = vit_net.features(x)
    assert [tuple(f.shape) for f in levels] == [(2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    assert vit_net.backbone.blocks == [0, 1, 2, 3]
    # the third level is the third block's token map itself; the fourth its 2x2 max-pool
    torch.testing.assert_close(levels[2], raw[2], rtol=0, atol=0)
    torch.testing.assert_close(levels[3], nn.functional.max_pool2d(raw[3], 2), rtol=0, atol=0)


def test_vit_blocks_are_forward_intermediates(vit_net: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 48)
    vit = vit_net.backbone.vit
    with torch.no_grad():
        ref = vit.forward_intermediates(x, indices=[0, 1, 2, 3], norm=True, intermediates_only=True)
        # by hand: block outputs, final norm, patch tokens (after the class token) as (B, C, H/16, W/16)
        tokens = vit._pos_embed(vit.patch_embed(x))
        outs = []
        for block in vit.blocks:
            tokens = block(tokens)
            outs.append(vit.norm(tokens)[:, vit.num_prefix_tokens:].transpose(1, 2).reshape(1, 32, 2, 3))
    for got, want, hand in zip(vit_net.backbone_features(x), ref, outs):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(got, hand)


def test_daformer_head_logits_at_stride_4_and_input_size(vit_net: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 96)
    levels = vit_net.forward_levels(x)
    assert len(levels) == 1 and levels[0].shape == (2, 5, 16, 24)
    assert vit_net(x).shape == (2, 5, 64, 96)


def test_sizes_not_multiple_of_the_patch_are_padded_and_cropped(vit_net: nn.Module) -> None:
    x = torch.randn(1, 3, 50, 70)  # padded to 64 x 80
    levels = vit_net.forward_levels(x)
    assert levels[0].shape == (1, 5, 50, 70)
    assert vit_net(x).shape == (1, 5, 50, 70)
    # the logits are those of the zero-padded image, upsampled to the padded size and cropped: exact geometry
    padded = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (64, 80) and torch.equal(padded[..., :50, :70], x)
    assert padded[..., 50:, :].abs().sum() == 0 and padded[..., 70:].abs().sum() == 0
    with torch.no_grad():
        full = vit_net(padded)
        torch.testing.assert_close(levels[0], full[..., :50, :70])
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        vit_net.backbone(x)


def test_gradients_reach_backbone_adapter_and_head() -> None:
    torch.manual_seed(0)
    net = build_segmenter(SegNetworkConfig(**VIT)).train()
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 5, (2, 32, 32))
    nn.functional.cross_entropy(net(x), y).backward()
    for part in (net.backbone.vit.patch_embed, net.backbone.vit.blocks[0], net.neck.up4, net.neck.up2,
                 net.classifier.embed, net.classifier.fuse, net.classifier.classifier):
        grads = [p.grad for p in part.parameters()]
        assert grads and all(g is not None for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    groups = net.param_groups()
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in net.backbone.parameters()}
    # the adapter is new: it learns with the head's lr
    assert {id(p) for p in net.neck.parameters()} <= {id(p) for p in groups["head"]}
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(net.parameters()))


def test_daformer_head_on_a_cnn_reads_its_last_four_stages() -> None:
    torch.manual_seed(0)
    net = build_segmenter(SegNetworkConfig(backbone="resnet18", num_classes=5, head="daformer", daformer_channels=16,
                                           output_stride=32)).eval()
    x = torch.randn(1, 3, 64, 64)
    assert [tuple(f.shape) for f in net.features(x)] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4),
                                                        (1, 512, 2, 2)]
    assert net.forward_levels(x)[0].shape == (1, 5, 16, 16)
    assert net.neck is None and net.input_multiple == 1
    assert [e.in_channels for e in net.classifier.embed] == [64, 128, 256, 512]


def test_daformer_head_structure() -> None:
    torch.manual_seed(0)
    head = DAFormerHead([8, 16, 24, 32], num_classes=3, channels=4, dilations=(1, 6, 12, 18), dropout=0.1)
    assert [e.out_channels for e in head.embed] == [4] * 4 and all(e.kernel_size == (1, 1) for e in head.embed)
    fuse = head.fuse
    assert fuse.image_pool is None  # DAFormer's official sepaspp: no image pooling
    first = fuse.branches[0]
    assert first.conv.kernel_size == (1, 1) and first.conv.in_channels == 16  # 4 levels x 4 channels
    for branch, d in zip(fuse.branches[1:], (6, 12, 18)):
        dw, pw = branch.depthwise.conv, branch.pointwise.conv
        assert dw.dilation == (d, d) and dw.groups == 16 and dw.kernel_size == (3, 3) and dw.padding == (d, d)
        assert pw.kernel_size == (1, 1) and pw.out_channels == 4
    assert fuse.bottleneck.conv.kernel_size == (3, 3) and fuse.bottleneck.conv.in_channels == 16
    assert head.dropout.p == 0.1 and head.classifier.out_channels == 3
    feats = [torch.randn(2, c, s, s) for c, s in zip([8, 16, 24, 32], [16, 8, 4, 2])]
    assert head.eval()(feats).shape == (2, 3, 16, 16)
    pooled = SeparableASPP(16, 4, (1, 6), pool=True).eval()
    assert pooled.bottleneck.conv.in_channels == 12 and pooled(torch.randn(2, 16, 5, 5)).shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match="daformer_dilations"):
        SeparableASPP(16, 4, (0, 6))
    with pytest.raises(ValueError, match="expects 4 feature levels"):
        head(feats[:3])


def test_weights_file_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_VIT)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)  # timm format, with an ImageNet-style classifier that is ignored
    net = build_segmenter(SegNetworkConfig(**VIT, weights=str(path)))
    loaded = net.backbone.vit.state_dict()
    reference = source.state_dict()
    assert set(loaded) == {k for k in reference if not k.startswith("head.")}
    assert all(torch.equal(v, reference[k]) for k, v in loaded.items())


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path: Path) -> None:
    shallow = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **{**TINY_VIT, "depth": 3})
    path = tmp_path / "shallow.pth"
    torch.save(shallow.state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit the ViT .*missing \['blocks\.3\."):
        build_segmenter(SegNetworkConfig(**VIT, weights=str(path)))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_segmenter(SegNetworkConfig(**VIT, weights=str(tmp_path / "absent.pth")))


def test_chosen_blocks_and_bad_configs() -> None:
    torch.manual_seed(0)
    vit = create_vit_backbone("vit_tiny_patch16_224", blocks=[0, 1, 3, 5], **{**TINY_VIT, "depth": 8})
    assert isinstance(vit, ViTBackbone) and vit.blocks == [0, 1, 3, 5] and len(vit.vit.blocks) == 6  # pruned
    with pytest.raises(ValueError, match="vit_blocks must be 4 increasing"):
        build_segmenter(SegNetworkConfig(**VIT, vit_blocks=[0, 1, 2, 9]))
    with pytest.raises(ValueError, match="vit_blocks is set but backbone 'resnet18'"):
        build_segmenter(SegNetworkConfig(backbone="resnet18", num_classes=5, vit_blocks=[0, 1, 2, 3]))
    with pytest.raises(ValueError, match="multi_level is for the deeplabv2/fcn heads"):
        build_segmenter(SegNetworkConfig(**VIT, multi_level=True))


def test_deeplab_head_on_a_vit_reads_the_coarsest_level() -> None:
    net = build_segmenter(SegNetworkConfig(**{**VIT, "head": "fcn"}, fcn_channels=8)).eval()
    assert net.forward_levels(torch.randn(1, 3, 64, 64))[0].shape == (1, 5, 2, 2)  # stride 32
    assert net(torch.randn(1, 3, 40, 40)).shape == (1, 5, 40, 40)


def test_dinov2_layout_patch_14_with_layer_scale(tmp_path: Path) -> None:
    tiny = dict(img_size=28, depth=4, embed_dim=32, num_heads=2)
    torch.manual_seed(2)
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, **tiny)
    path = tmp_path / "dinov2.pth"
    torch.save(source.state_dict(), path)
    net = build_segmenter(SegNetworkConfig(backbone="vit_small_patch14_dinov2", num_classes=5, head="daformer",
                                           daformer_channels=16, weights=str(path), backbone_kwargs=tiny)).eval()
    assert net.input_multiple == 14
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in net.backbone.vit.state_dict().items())
    x = torch.randn(1, 3, 32, 45)  # padded to 42 x 56: a 3 x 4 patch grid, the position embedding interpolated
    assert [tuple(f.shape[-2:]) for f in net.features(x)] == [(12, 16), (6, 8), (3, 4), (1, 2)]
    assert net.forward_levels(x)[0].shape == (1, 5, 32, 45)
