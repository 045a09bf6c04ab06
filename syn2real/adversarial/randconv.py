"""Random-convolution style randomisation (RandConv, Xu et al., ICLR 2021) as an ``augment:`` for any method.

A convolution with freshly drawn random weights keeps an image's shapes (its support is a few pixels) and replaces
its local texture and colour statistics: a random *style* of the labelled source. Each view draws a kernel size k
from ``kernel_sizes`` (paper: 1, 3, 5, 7), weights w ~ N(0, 1 / (C·k²)) (Kaiming normal with the ``conv2d`` gain of
1, no bias) and, in the paper's ``RC_mix`` variant used for digits (``mixing: true``), a blend α ~ U(0, 1) with the
input: ``x_rc = α · conv_w(x) + (1 − α) · x``; without mixing, ``x_rc = conv_w(x)`` except with probability
``identity_prob`` (paper's ``RC_img``: 0.5). One draw per view is shared by the whole batch, as the paper redraws
once per step; the convolution acts on the normalised batch (the paper feeds it whitened images) and its output is
not clamped (the paper's default).

The method's supervised loss is computed on one random view (returned by ``__call__``); with ``weight > 0`` two
more views are drawn and ``weight · JS(p_view0, p_view1, p_view2)`` (the paper's consistency loss: λ 10 for
``RC_mix``, 5 for ``RC_img``) is added through :meth:`RandConv.auxiliary_losses`. The shapes do not move, so a
segmentation mask stays valid and the consistency is taken per pixel.

Networks with BatchNorm: a batch is one random style (one gain, polarity and blur for all its images), so the
running statistics that evaluation uses end up matching no clean image (measured on the embedded digits, 3 seeds:
68.7 ± 9.1 % target accuracy against 80.3 ± 1.9 % without RandConv; 80.6 ± 1.8 % once the statistics are
re-estimated on clean source). The paper's networks for digits have no BatchNorm. ``split_bn: true`` keeps the
statistics clean the way AdvProp and AugMix's split BatchNorm do: the task network's BatchNorms become dual
(:func:`~syn2real.adversarial.convert_dual_bn`), the method's own loss is taken on the *clean* batch through the
main BatchNorms, and the random views go through the auxiliary ones with ``CE(view0, y) + λ · JS(views)``;
evaluation uses the main BatchNorms. A network without BatchNorm is refused (it needs ``split_bn: false``).

Every random draw comes from the global torch CPU generator (seeded by ``seed_everything``, saved in checkpoints),
so a seeded run sees the same styles on any device and resumes exactly. Use in any config::

    model:
      init_args:
        augment:
          class_path: syn2real.adversarial.RandConv
          init_args: {kernel_sizes: [1, 3, 5, 7], mixing: true, weight: 10.0}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.advprop import bn_route, convert_dual_bn, require_dual_bn
from syn2real.adversarial.base import Augmentation
from syn2real.core.cross_entropy import IGNORE_INDEX, task_cross_entropy
from syn2real.losses.consistency import js_divergence

__all__ = ["RandConv", "random_conv"]


def random_conv(
    x: torch.Tensor,
    kernel_sizes: Sequence[int] = (1, 3, 5, 7),
    mixing: bool = True,
    identity_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random-convolution view of the batch ``x`` (B, C, H, W): one kernel size, one weight tensor and (with
    ``mixing``) one blend α for the whole batch, drawn on the CPU from ``generator`` (default: the global one)."""
    if x.ndim != 4:
        raise ValueError(f"RandConv needs image batches (B, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    k = int(kernel_sizes[int(torch.randint(len(kernel_sizes), (1,), generator=generator))])
    if not mixing and identity_prob > 0 and float(torch.rand((), generator=generator)) < identity_prob:
        return x
    weight = torch.randn(c, c, k, k, generator=generator) / math.sqrt(c * k * k)
    out = F.conv2d(x, weight.to(x.device, x.dtype), padding=k // 2)
    if mixing:
        alpha = float(torch.rand((), generator=generator))
        out = alpha * out + (1 - alpha) * x
    return out


class RandConv(Augmentation):
    """Random-convolution styles + Jensen–Shannon consistency, for classification and segmentation.

    Args:
        kernel_sizes: odd kernel sizes, one drawn per view (paper: 1, 3, 5, 7).
        mixing: blend the random convolution with its input, α ~ U(0, 1) (paper's ``RC_mix``, the digits default).
        identity_prob: without ``mixing``, the probability that a view is the input itself (paper's ``RC_img``:
            0.5).
        weight: λ of the consistency ``λ · JS(p_view0, p_view1, p_view2)`` (paper: 10 with mixing, 5 without);
            0 trains on one random view per step without consistency.
        split_bn: random views through auxiliary BatchNorms, the clean batch through the main ones (above); the
            method's loss is then the clean batch's and ``randconv_ce`` adds the view's cross-entropy.
        ignore_index: unlabelled pixels of segmentation labels (``split_bn`` only).
    """

    def __init__(
        self,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        mixing: bool = True,
        identity_prob: float = 0.0,
        weight: float = 10.0,
        split_bn: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        sizes = tuple(int(k) for k in kernel_sizes)
        if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(
                f"augment.init_args.kernel_sizes (RandConv) must be odd sizes >= 1, got {list(kernel_sizes)}"
            )
        if not 0.0 <= identity_prob < 1.0:
            raise ValueError(f"augment.init_args.identity_prob (RandConv) must be in [0, 1), got {identity_prob}")
        if mixing and identity_prob > 0:
            raise ValueError("RandConv: identity_prob applies without mixing (the paper's RC_img); with mixing: true "
                             "the blend α ~ U(0, 1) already reaches the input, set identity_prob: 0")
        if weight < 0:
            raise ValueError(f"augment.init_args.weight (RandConv's consistency weight) must be >= 0, got {weight}")
        self.kernel_sizes, self.mixing = sizes, bool(mixing)
        self.identity_prob, self.weight = float(identity_prob), float(weight)
        self.split_bn, self.ignore_index = bool(split_bn), int(ignore_index)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """One random-convolution view of ``x`` (no gradient to the images)."""
        with torch.no_grad():
            return random_conv(x.detach(), self.kernel_sizes, self.mixing, self.identity_prob)

    def prepare(self, model: nn.Module) -> None:
        if self.split_bn:
            convert_dual_bn(model, hint="RandConv's split_bn needs BatchNorm; set augment.init_args.split_bn: false "
                                        "(the paper's loss)")

    def auxiliary_losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.split_bn:
            return self._split_bn_losses(model, x, y)
        if self.weight == 0:
            return {}
        views = [self.view(x) for _ in range(3)]
        # The first view is also the one the supervised loss sees (``__call__`` returns it), as in the paper.
        self._pending = (x, views[0])
        logits = model(torch.cat(views)).chunk(3)
        return {"randconv_jsd": self.weight * js_divergence(list(logits))}

    def _split_bn_losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        require_dual_bn(model, "RandConv(split_bn=True)")
        n = 3 if self.weight > 0 else 1
        views = [self.view(x) for _ in range(n)]
        with bn_route(model, "aux"):
            logits = model(torch.cat(views)).chunk(n)
        out = {"randconv_ce": task_cross_entropy(logits[0], y, self.ignore_index)}
        if self.weight > 0:
            out["randconv_jsd"] = self.weight * js_divergence(list(logits))
        return out

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.split_bn:
            return x, y  # the method's own loss is the clean batch's, through the main BatchNorms
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is x:
            return pending[1], y
        return self.view(x), y
