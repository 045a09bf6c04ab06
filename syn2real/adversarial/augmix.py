"""AugMix (Hendrycks et al., ICLR 2020) with the Jensen–Shannon consistency loss, as an ``augment:`` for any
method, on the normalised tensors of the training step (GPU, batched; timm's AugMix works on PIL images in the
data loader and its ``JsdCrossEntropy`` needs the three views in one batch with the CE, so neither fits here).

For every image, ``width`` chains of ``depth`` random ops (depth drawn in 1–3 per chain when ``depth`` is −1) at
severity ``severity`` are mixed with Dirichlet(α) weights, and the mix is blended with the original image with
m ~ Beta(α, α): ``x_augmix = (1 − m)·x + m·Σ_i w_i·chain_i(x)``. The paper's defaults: width 3, depth 1–3,
severity 3, α = 1, and the op set autocontrast, equalize, posterize, rotate, solarize, shear x/y, translate x/y
(colour, contrast, brightness and sharpness are left out: they overlap ImageNet-C's test corruptions).

The method's own loss is the CE of the *clean* batch (``__call__`` returns the batch unchanged); the augmentation
adds ``weight · JS(p_clean, p_augmix1, p_augmix2)`` (paper: weight 12) through :meth:`AugMix.auxiliary_losses`,
which forwards the clean batch and two AugMix views (one extra forward of the clean batch beside the method's).
With ``split_bn: true`` the task network's BatchNorms become AdvProp's dual BatchNorm: the clean batch uses the
main layers, the two AugMix views the auxiliary ones (timm's split BatchNorm, routed by a flag); deployment and
evaluation use the main ones.

``ops: photometric`` keeps only the ops that never move a pixel (autocontrast, equalize, posterize, solarize:
each output pixel is a function of the same input pixel and of per-image statistics), so a segmentation mask stays
valid; the geometric ops are refused for dense (per-pixel) outputs.

Ops work in [0, 1] pixel space (``pixels = x · std + mean``), 8-bit semantics where the op is defined on 8-bit
values (equalize, posterize, solarize thresholds); geometric ops use bilinear sampling with black fill, as the paper.
Every random draw comes from the global torch CPU generator (seeded by ``seed_everything``, saved in checkpoints
with the other random states), so a seeded run sees the same views on any device and resumes exactly.

Use in any config::

    model:
      init_args:
        augment:
          class_path: syn2real.adversarial.AugMix
          init_args: {weight: 12.0, width: 3, depth: -1, severity: 3, ops: augmix, mean: [0.5], std: [0.5]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.advprop import bn_route, convert_dual_bn, require_dual_bn
from syn2real.adversarial.base import Augmentation, pixel_stats
from syn2real.losses.consistency import js_divergence

__all__ = [
    "AUGMIX_OPS",
    "GEOMETRIC_OPS",
    "OPS",
    "PHOTOMETRIC_OPS",
    "AugMix",
    "augmix_pixels",
    "resolve_ops",
    "sample_mixing",
]

# An op maps pixels (n, C, H, W) in [0, 1], a level (n,) drawn in [0.1, severity] and a sign (n,) of ±1 to pixels.
Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _levels(level: torch.Tensor, maxval: float) -> torch.Tensor:
    """The paper's ``int_parameter``: ``int(level · maxval / 10)`` (level at most 10)."""
    return torch.floor(level * maxval / 10)


def _per_image(level: torch.Tensor, ndim: int) -> torch.Tensor:
    return level.view(-1, *([1] * (ndim - 1)))


def _quantise(pixels: torch.Tensor) -> torch.Tensor:
    """8-bit values 0..255 (long) of [0, 1] pixels."""
    return (pixels.clamp(0, 1) * 255).round().long()


def autocontrast(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image linearly so its darkest value is 0 and its brightest 1 (flat channels
    unchanged), as PIL's ``ImageOps.autocontrast`` without cutoff."""
    flat = pixels.flatten(2)
    lo, hi = flat.amin(dim=2), flat.amax(dim=2)
    span = hi - lo
    ok = span > 1e-8
    scale = torch.where(ok, 1.0 / span.clamp_min(1e-8), torch.ones_like(span))
    offset = torch.where(ok, lo, torch.zeros_like(lo))
    shape = (*pixels.shape[:2],) + (1,) * (pixels.ndim - 2)
    return ((pixels - offset.view(shape)) * scale.view(shape)).clamp(0, 1)


def equalize(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel of each image on 8-bit values, PIL's ``ImageOps.equalize`` rule:
    ``step = (N − count of the brightest value) // 255``, ``lut[v] = (step // 2 + #pixels below v) // step``."""
    n, c = pixels.shape[:2]
    values = _quantise(pixels).flatten(2).view(n * c, -1)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=pixels.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    last = 255 - torch.flip(hist > 0, dims=[1]).long().argmax(dim=1)  # brightest value present
    step = (values.shape[1] - hist.gather(1, last.view(-1, 1)).squeeze(1)) // 255
    below = hist.cumsum(dim=1) - hist
    lut = ((step.view(-1, 1) // 2 + below) // step.clamp_min(1).view(-1, 1)).clamp(max=255)
    out = lut.gather(1, values)
    out = torch.where((step > 0).view(-1, 1), out, values)
    return (out.float() / 255).view(pixels.shape).to(pixels.dtype)


def posterize(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Keep the ``4 − int(level · 4 / 10)`` highest bits of each 8-bit value."""
    bits = 4 - _levels(level, 4)
    drop = (2 ** (8 - bits)).long()
    drop = _per_image(drop, pixels.ndim)
    return ((_quantise(pixels) // drop) * drop).to(pixels.dtype) / 255


def solarize(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Invert the values at or above the 8-bit threshold ``256 − int(level · 256 / 10)``."""
    threshold = _per_image(256 - _levels(level, 256), pixels.ndim).to(pixels.dtype)
    return torch.where(pixels * 255 >= threshold, 1 - pixels, pixels)


def _warp(pixels: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Each image resampled (bilinear, black outside) at ``src = A · (x, y, 1)`` for every output pixel centre
    ``(x, y)`` in pixel units from the top-left corner; ``matrices`` (n, 2, 3)."""
    n, _, h, w = pixels.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=pixels.device, dtype=pixels.dtype) + 0.5,
        torch.arange(w, device=pixels.device, dtype=pixels.dtype) + 0.5, indexing="ij",
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, h * w, 3)
    src = points @ matrices.to(pixels.dtype).transpose(1, 2)  # (n, h*w, 2)
    grid = torch.stack([src[..., 0] * 2 / w - 1, src[..., 1] * 2 / h - 1], dim=-1).view(n, h, w, 2)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=1)


def rotate(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre by ``±int(level · 30 / 10)`` degrees."""
    theta = _levels(level, 30) * sign * math.pi / 180
    h, w = pixels.shape[-2:]
    cx, cy = w / 2, h / 2
    cos, sin = theta.cos(), theta.sin()
    return _warp(pixels, _affine([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy]]))


def shear_x(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Horizontal shear ``x ← x + s·y`` with ``s = ±level · 0.3 / 10`` (PIL's origin: the top-left corner)."""
    s = level * 0.3 / 10 * sign
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _warp(pixels, _affine([[one, s, zero], [zero, one, zero]]))


def shear_y(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Vertical shear ``y ← y + s·x`` with ``s = ±level · 0.3 / 10``."""
    s = level * 0.3 / 10 * sign
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _warp(pixels, _affine([[one, zero, zero], [s, one, zero]]))


def translate_x(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shift by ``±int(level · (width / 3) / 10)`` pixels horizontally."""
    t = _levels(level, pixels.shape[-1] / 3) * sign
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return _warp(pixels, _affine([[one, zero, t], [zero, one, zero]]))


def translate_y(pixels: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shift by ``±int(level · (height / 3) / 10)`` pixels vertically."""
    t = _levels(level, pixels.shape[-2] / 3) * sign
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return _warp(pixels, _affine([[one, zero, zero], [zero, one, t]]))


OPS: dict[str, Op] = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "solarize": solarize,
    "rotate": rotate, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x, "translate_y": translate_y,
}
PHOTOMETRIC_OPS: tuple[str, ...] = ("autocontrast", "equalize", "posterize", "solarize")
GEOMETRIC_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
AUGMIX_OPS: tuple[str, ...] = PHOTOMETRIC_OPS + GEOMETRIC_OPS  # the paper's set (no ImageNet-C overlap)
_OP_SETS = {"augmix": AUGMIX_OPS, "photometric": PHOTOMETRIC_OPS}


def resolve_ops(ops: str | Sequence[str]) -> tuple[str, ...]:
    """``augmix`` (the paper's nine ops), ``photometric`` (the four that never move a pixel) or a list of names."""
    if isinstance(ops, str):
        if ops not in _OP_SETS:
            raise ValueError(f"augment.init_args.ops must be one of {sorted(_OP_SETS)} or a list of op names "
                             f"from {sorted(OPS)}, got {ops!r}")
        return _OP_SETS[ops]
    names = tuple(ops)
    bad = [n for n in names if n not in OPS]
    if not names or bad:
        raise ValueError(f"augment.init_args.ops: unknown op(s) {bad} (or an empty list); known: {sorted(OPS)}")
    return names


def sample_mixing(n: int, width: int = 3, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: chain weights ``w ~ Dirichlet(α, …, α)`` (n, width), rows summing to 1, and the blend
    ``m ~ Beta(α, α)`` (n,); drawn on the CPU from the global torch generator."""
    concentration = torch.full((width,), float(alpha))
    weights = torch.distributions.Dirichlet(concentration).sample((n,))
    blend = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((n,))
    return weights, blend


def augmix_pixels(
    pixels: torch.Tensor, ops: Sequence[str] = AUGMIX_OPS, width: int = 3, depth: int = -1, severity: float = 3.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    """One AugMix view of a batch of [0, 1] pixels (n, C, H, W): every image gets its own chains, ops, levels and
    mixing weights (see the module docstring). Draws come from the global torch CPU generator."""
    n = pixels.shape[0]
    max_depth = 3 if depth < 1 else int(depth)
    weights, blend = sample_mixing(n, width, alpha)
    depths = torch.randint(1, 4, (n, width)) if depth < 1 else torch.full((n, width), int(depth))
    choice = torch.randint(0, len(ops), (n, width, max_depth))
    level = 0.1 + torch.rand(n, width, max_depth) * (severity - 0.1)  # the paper's sample_level: U(0.1, severity)
    sign = torch.where(torch.rand(n, width, max_depth) < 0.5, -1.0, 1.0)
    device, dtype = pixels.device, pixels.dtype
    mix = torch.zeros_like(pixels)
    for i in range(width):
        chain = pixels.clone()
        for d in range(max_depth):
            for j, name in enumerate(ops):
                idx = ((choice[:, i, d] == j) & (depths[:, i] > d)).nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue
                dev_idx = idx.to(device)
                chain[dev_idx] = OPS[name](chain[dev_idx], level[idx, i, d].to(device, dtype),
                                           sign[idx, i, d].to(device, dtype)).clamp(0, 1)
        mix = mix + _per_image(weights[:, i].to(device, dtype), pixels.ndim) * chain
    m = _per_image(blend.to(device, dtype), pixels.ndim)
    return (1 - m) * pixels + m * mix


class AugMix(Augmentation):
    """AugMix + Jensen–Shannon consistency for any classification (or, photometric, segmentation) method.

    Args:
        weight: λ of ``λ · JS(p_clean, p_aug1, p_aug2)`` (paper: 12).
        width: chains per view (paper: 3).
        depth: ops per chain; −1 draws 1–3 per chain (paper).
        severity: upper end of every op's level draw U(0.1, severity) (paper: 3 for CIFAR, 1 for ImageNet).
        alpha: Dirichlet and Beta parameter (paper: 1).
        ops: ``augmix`` (the paper's nine), ``photometric`` (autocontrast, equalize, posterize, solarize: safe for
            segmentation masks) or a list of op names.
        split_bn: give the AugMix views their own BatchNorm layers (AdvProp's dual BatchNorm; clean → main).
        mean / std: the data's normalisation (one value per channel, or one for all).
    """

    def __init__(
        self,
        weight: float = 12.0,
        width: int = 3,
        depth: int = -1,
        severity: float = 3.0,
        alpha: float = 1.0,
        ops: str | Sequence[str] = "augmix",
        split_bn: bool = False,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
    ) -> None:
        if weight < 0:
            raise ValueError(f"augment.init_args.weight (AugMix's JS weight) must be >= 0, got {weight}")
        if width < 1 or depth == 0 or depth > 10:
            raise ValueError(f"AugMix needs width >= 1 and depth -1 (random 1-3) or 1..10; got {width}, {depth}")
        if not 0.1 <= severity <= 10 or alpha <= 0:
            raise ValueError(f"AugMix needs 0.1 <= severity <= 10 and alpha > 0; got {severity}, {alpha}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need equal lengths and std > 0, got {list(mean)}, {list(std)}")
        self.weight, self.width, self.depth = float(weight), int(width), int(depth)
        self.severity, self.alpha, self.ops = float(severity), float(alpha), resolve_ops(ops)
        self.split_bn = bool(split_bn)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    @property
    def moves_pixels(self) -> bool:
        """Whether a geometric op is in the set (then per-pixel labels and outputs no longer line up)."""
        return any(name in GEOMETRIC_OPS for name in self.ops)

    def prepare(self, model: nn.Module) -> None:
        if self.split_bn:
            convert_dual_bn(model, hint="AugMix's split_bn needs BatchNorm; set augment.init_args.split_bn: false")

    def views(self, x: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
        """``n`` AugMix views of the normalised batch ``x``, normalised the same way (no gradient)."""
        mean, std = pixel_stats(x, self.mean, self.std)
        with torch.no_grad():
            pixels = (x.detach() * std + mean).clamp(0, 1)
            return [
                (augmix_pixels(pixels, self.ops, self.width, self.depth, self.severity, self.alpha) - mean) / std
                for _ in range(n)
            ]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y  # the method's own loss is the CE of the clean batch

    def auxiliary_losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        aug1, aug2 = self.views(x)
        if self.split_bn:
            require_dual_bn(model, "AugMix(split_bn=True)")
            with bn_route(model, "main"):
                clean = model(x)
            with bn_route(model, "aux"):
                p1, p2 = model(torch.cat([aug1, aug2])).chunk(2)
        else:
            clean, p1, p2 = model(torch.cat([x, aug1, aug2])).chunk(3)
        if clean.ndim > 2 and self.moves_pixels:
            raise ValueError(
                f"AugMix with geometric ops {[o for o in self.ops if o in GEOMETRIC_OPS]} on dense outputs of shape "
                f"{tuple(clean.shape)}: the views' pixels no longer line up; set augment.init_args.ops: photometric"
            )
        return {"augmix_jsd": self.weight * js_divergence([clean, p1, p2])}
