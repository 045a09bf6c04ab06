"""AdvProp (Xie et al., CVPR 2020): adversarial examples as augmentation that improves clean accuracy, by giving
them their own auxiliary BatchNorm layers.

Every BatchNorm of the task network (any ``_BatchNorm`` subclass: ``nn.BatchNorm1d/2d``, timm's
``BatchNormAct2d`` with its activation, ...) is wrapped in a :class:`DualBatchNorm`: a ``main`` layer for clean
data and an ``aux`` copy for adversarial data, every other weight shared. A switch (:func:`bn_route`) selects the
path of the whole network. Training minimises CE(clean, main BNs) + CE(PGD example, auxiliary BNs), the attack
itself run on the auxiliary path; deployment uses the main BNs only (:func:`export_main_bn`, or
``syn2real export`` which writes such a network's weights with its original key names).

Use in any config::

    model:
      init_args:
        augment:
          class_path: syn2real.adversarial.AdvProp
          init_args: {epsilon: 0.00392, mean: [0.5], std: [0.5]}   # ε = 1/255; steps = ε·255 + 1; α = 1/255
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from syn2real.adversarial.attacks import PGD
from syn2real.adversarial.base import Augmentation
from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.core.labels import IGNORE_INDEX

__all__ = [
    "AdvProp",
    "DualBatchNorm",
    "bn_route",
    "collapse_dual_bn",
    "convert_dual_bn",
    "export_main_bn",
    "expand_to_dual_bn",
    "require_dual_bn",
    "set_bn_route",
]

Route = Literal["main", "aux"]


class DualBatchNorm(nn.Module):
    """A BatchNorm layer and an auxiliary copy of it; :attr:`route` picks which one normalises the input.

    The auxiliary copy starts as an exact copy (weights, running statistics, train/eval mode, activation of a
    fused ``BatchNormAct``), so converting a trained network changes nothing on the main path."""

    def __init__(self, bn: _BatchNorm) -> None:
        super().__init__()
        if not isinstance(bn, _BatchNorm):
            raise TypeError(f"DualBatchNorm wraps a BatchNorm layer, got {type(bn).__name__}")
        self.main = bn
        self.aux = copy.deepcopy(bn)
        self.route: Route = "main"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aux(x) if self.route == "aux" else self.main(x)

    def extra_repr(self) -> str:
        return f"route={self.route}"


def convert_dual_bn(
    model: nn.Module, hint: str = "AdvProp needs BatchNorm (use PGD for plain adversarial training)"
) -> int:
    """Wrap every BatchNorm of ``model`` (in place) in a :class:`DualBatchNorm`; returns how many were wrapped.

    Already converted layers are left alone, so calling it twice is harmless. Raises ``ValueError`` when the
    model has no BatchNorm at all (AdvProp would silently reduce to plain adversarial training); ``hint`` tells the
    caller's user what to do instead."""
    count = 0

    def visit(module: nn.Module) -> None:
        nonlocal count
        for name, child in module.named_children():
            if isinstance(child, DualBatchNorm):
                continue
            if isinstance(child, _BatchNorm):
                setattr(module, name, DualBatchNorm(child))
                count += 1
            else:
                visit(child)

    visit(model)
    if count == 0 and not any(isinstance(m, DualBatchNorm) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer; {hint}")
    return count


def require_dual_bn(model: nn.Module, owner: str) -> None:
    """Raise ``RuntimeError`` naming ``owner`` unless ``model`` has dual BatchNorms (its ``prepare`` ran)."""
    if not any(isinstance(m, DualBatchNorm) for m in model.modules()):
        raise RuntimeError(f"{owner}: the model has no dual BatchNorm; its prepare(model) was not called")


def set_bn_route(model: nn.Module, route: Route) -> None:
    """Send every :class:`DualBatchNorm` of ``model`` down the ``main`` or ``aux`` path."""
    if route not in ("main", "aux"):
        raise ValueError(f"BatchNorm route must be 'main' or 'aux', got {route!r}")
    for module in model.modules():
        if isinstance(module, DualBatchNorm):
            module.route = route


@contextlib.contextmanager
def bn_route(model: nn.Module, route: Route) -> Iterator[nn.Module]:
    """Within the block, the dual BatchNorms of ``model`` use ``route``; their previous routes are restored after."""
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    before = [m.route for m in duals]
    set_bn_route(model, route)
    try:
        yield model
    finally:
        for module, old in zip(duals, before):
            module.route = old


def export_main_bn(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in which every :class:`DualBatchNorm` is replaced by its main BatchNorm: the
    deployable network, with the state-dict keys of the unconverted model."""
    exported = copy.deepcopy(model)

    def visit(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, DualBatchNorm):
                setattr(module, name, child.main)
            else:
                visit(child)

    visit(exported)
    return exported


def expand_to_dual_bn(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of the unconverted network onto ``model``'s dual BatchNorms: each plain BatchNorm entry
    ``<layer>.<name>`` initialises both ``<layer>.main.<name>`` and ``<layer>.aux.<name>`` (so an AdvProp run
    can start from a source-only checkpoint). Entries already in dual form, and models without dual BN, pass
    through unchanged."""
    layers = [name for name, m in model.named_modules() if isinstance(m, DualBatchNorm)]
    if not layers:
        return state
    out = dict(state)
    for layer in layers:
        prefix = layer + "."
        for key in [k for k in state if k.startswith(prefix)]:
            rest = key[len(prefix):]
            if rest.startswith(("main.", "aux.")):
                continue
            value = out.pop(key)
            out[prefix + "main." + rest] = value
            out[prefix + "aux." + rest] = value.clone()
    return out


def collapse_dual_bn(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse direction: a dual-BN state dict reduced to its main BatchNorms under plain key names (an AdvProp
    checkpoint loaded into a network without AdvProp). Keys without ``.main.`` / ``.aux.`` pass through."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".aux." in f".{key}":
            continue
        out[key.replace(".main.", ".") if ".main." in key else key.removeprefix("main.")] = value
    return out


class AdvProp(Augmentation):
    """AdvProp as a plug-in augmentation: :meth:`prepare` converts the task network's BatchNorms to dual BN; the
    method's own forward of the clean batch goes through the main BNs; :meth:`auxiliary_losses` adds
    ``weight · CE(f_aux(x_adv), y)`` with ``x_adv`` a PGD L∞ example computed on the auxiliary path.

    Args:
        epsilon: L∞ radius in [0, 1] pixels (paper: 1–4 / 255 growing with the model; default 1/255).
        step_size: PGD step (paper: 1/255).
        steps: PGD steps; default ``round(epsilon · 255) + 1`` as in the paper.
        weight: weight of the adversarial loss (paper: 1, i.e. the two losses 1:1).
        mean / std: the data's normalisation.
        ignore_index: unlabelled pixels of segmentation labels.
    """

    def __init__(
        self,
        epsilon: float = 1.0 / 255,
        step_size: float = 1.0 / 255,
        steps: int | None = None,
        weight: float = 1.0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if weight < 0:
            raise ValueError(f"AdvProp weight must be >= 0, got {weight}")
        steps = int(round(epsilon * 255)) + 1 if steps is None else int(steps)
        self.attack = PGD(epsilon, step_size, steps, "linf", True, mean, std, "replace", ignore_index)
        self.weight = float(weight)
        self.ignore_index = ignore_index

    def prepare(self, model: nn.Module) -> None:
        convert_dual_bn(model)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y  # the clean batch: the method trains on it through the main BatchNorms

    def auxiliary_losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        require_dual_bn(model, "AdvProp")
        with bn_route(model, "aux"):
            adv = self.attack.perturb(model, x, y)
            loss = task_cross_entropy(model(adv), y, self.ignore_index)
        return {"advprop_ce": self.weight * loss}
