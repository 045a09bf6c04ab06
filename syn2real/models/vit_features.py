"""Plain ViTs (timm ``VisionTransformer``/``Eva``: DINOv2, DeiT, AugReg, ...) as multi-level segmentation encoders.

A ViT keeps one resolution (the patch grid) in every block. :class:`ViTBackbone` returns the token maps of four
blocks (timm's ``forward_intermediates``), and :class:`SimpleFeaturePyramid` turns them into four levels at 4, 2, 1
and 1/2 times the grid's resolution (strides 4, 8, 16, 32 for 16-pixel patches) with transposed convolutions and a
max-pool, the simple multi-level adapter of BEiT/ViTDet (Li et al., "Exploring Plain Vision Transformer Backbones
for Object Detection", ECCV 2022), so that heads written for hierarchical encoders (DAFormer) read a ViT.

Weights come from a local timm-format state dict (or a DINOv2 release file, which timm's checkpoint filter
converts), loaded strictly: every encoder tensor must be in the file.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

__all__ = [
    "VIT_MODULES",
    "SimpleFeaturePyramid",
    "ViTBackbone",
    "create_vit_backbone",
    "default_vit_blocks",
    "is_vit",
    "pad_to_multiple",
]

#: timm modules whose models are plain ViTs with ``forward_intermediates`` and ``prune_intermediate_layers``
VIT_MODULES = ("vision_transformer", "deit", "eva")


def is_vit(name: str) -> bool:
    """Whether timm's model ``name`` is a plain ViT (built as :class:`ViTBackbone`, not with ``features_only``)."""
    return timm.is_model(name) and timm.models.is_model_in_modules(name, list(VIT_MODULES))


def default_vit_blocks(depth: int) -> list[int]:
    """Four evenly spaced blocks ending with the last: 12 blocks -> [2, 5, 8, 11], 24 -> [5, 11, 17, 23]."""
    if depth < 4:
        raise ValueError(f"a ViT backbone needs at least 4 blocks for 4 feature levels, this one has {depth}")
    return [(i + 1) * depth // 4 - 1 for i in range(4)]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``x`` (B, C, H, W) at the bottom and right so H and W are multiples of ``multiple`` (a no-op if they
    are). Zero is the mean colour after normalisation."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


class ViTBackbone(nn.Module):
    """Token maps (B, embed_dim, H/p, W/p) of four blocks of a timm ViT, via ``forward_intermediates``.

    Blocks after the last one used, the classifier and (unless ``norm``) the final norm are pruned. The input's
    height and width must be multiples of the patch size ``p`` (:func:`pad_to_multiple`); the segmentation network
    pads for it.

    Args:
        vit: a timm ``VisionTransformer`` / ``Eva`` (built with ``num_classes=0``, ``dynamic_img_size=True`` for
            inputs of any size).
        blocks: indices of the four blocks whose outputs are returned (0-based, increasing).
        norm: apply the ViT's final norm to every returned token map (DINOv2's ``get_intermediate_layers`` default).
    """

    def __init__(self, vit: nn.Module, blocks: list[int], norm: bool = True) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if len(blocks) != 4 or any(not 0 <= int(b) < depth for b in blocks) or list(blocks) != sorted(set(blocks)):
            raise ValueError(
                f"model.task.network.vit_blocks must be 4 increasing block indices in [0, {depth}) for this "
                f"{depth}-block ViT, got {list(blocks)}"
            )
        kept = vit.prune_intermediate_layers(list(blocks), prune_norm=not norm, prune_head=True)
        self.blocks = [int(b) for b in kept]
        self.vit = vit
        self.norm = bool(norm)
        patch = vit.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise ValueError(f"ViT backbones with non-square patches {tuple(patch)} are not supported")
        self.patch_size = int(patch[0])
        self.embed_dim = int(vit.embed_dim)

    def channels(self) -> list[int]:
        """Channels of the four returned maps (all ``embed_dim``)."""
        return [self.embed_dim] * 4

    def reductions(self) -> list[int]:
        """Strides of the four returned maps (all the patch size)."""
        return [self.patch_size] * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"ViT input {h}x{w} is not a multiple of the patch size {self.patch_size}; pad it first "
                "(SegmentationNet does)"
            )
        return self.vit.forward_intermediates(
            x, indices=self.blocks, norm=self.norm, output_fmt="NCHW", intermediates_only=True
        )


class SimpleFeaturePyramid(nn.Module):
    """Four same-resolution maps -> four levels at ×4, ×2, ×1, ×½ of it (BEiT/ViTDet's adapter).

    ×4: ConvTranspose 2×2/2 → LayerNorm → GELU → ConvTranspose 2×2/2; ×2: ConvTranspose 2×2/2; ×1: identity;
    ×½: max-pool 2×2/2. Channels are kept. LayerNorm rather than BatchNorm: training batches hold 2 crops.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        # the norm is named ``norm`` so DAFormer's optimiser rule (no decay on norm parameters) applies to it
        self.up4 = nn.Sequential(OrderedDict(
            up1=nn.ConvTranspose2d(channels, channels, 2, stride=2),
            norm=LayerNorm2d(channels),
            act=nn.GELU(),
            up2=nn.ConvTranspose2d(channels, channels, 2, stride=2),
        ))
        self.up2 = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.down2 = nn.MaxPool2d(2, stride=2)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != 4:
            raise ValueError(f"SimpleFeaturePyramid expects 4 token maps, got {len(feats)}")
        return [self.up4(feats[0]), self.up2(feats[1]), feats[2], self.down2(feats[3])]


def _load_vit_weights(model: nn.Module, path: Path, name: str) -> None:
    """Load a timm-format (or DINOv2 release) state dict into ``model`` strictly, ignoring only a classifier."""
    from syn2real.models.pretrained import load_state_dict_file

    state = load_state_dict_file(path)
    # timm's own conversion for the model family (DINOv2/original key names, position-embedding resampling to the
    # model's grid); it lives in the model's module and is what timm applies to its downloads.
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.", "head_drop."))}
    expected = {k for k in model.state_dict() if not k.startswith(("head.", "fc_norm."))}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"model.task.network.weights {path} does not fit the ViT {name!r}: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"model.task.network.weights {path} does not fit the ViT {name!r}: {err}") from err


def create_vit_backbone(
    name: str,
    weights: str | Path | None = None,
    blocks: list[int] | None = None,
    norm: bool = True,
    **kwargs: Any,
) -> ViTBackbone:
    """A :class:`ViTBackbone` of timm's ``name``, optionally from a local weight file (never downloaded).

    ``kwargs`` go to ``timm.create_model`` (``None`` values dropped); ``dynamic_img_size`` defaults to True so that
    any input size (a multiple of the patch) works, the position embedding being interpolated to the patch grid.
    ``blocks`` defaults to :func:`default_vit_blocks` of the model's depth.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs.setdefault("dynamic_img_size", True)
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: not in timm's registry (see timm.list_models())")
    try:
        vit = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as err:
        raise ValueError(f"ViT backbone {name!r} cannot be built with backbone_kwargs {kwargs}: {err}") from err
    if weights is not None:
        from syn2real.models.pretrained import resolve_weights

        _load_vit_weights(vit, resolve_weights(weights), name)
    if not hasattr(vit, "forward_intermediates") or not hasattr(vit, "blocks"):
        raise ValueError(f"backbone {name!r} has no forward_intermediates/blocks; it is not a plain timm ViT")
    return ViTBackbone(vit, list(blocks) if blocks is not None else default_vit_blocks(len(vit.blocks)), norm)
