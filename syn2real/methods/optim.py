"""Optimiser and learning-rate schedule settings (``optim:`` of every method) and their construction."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "OptimConfig",
    "build_optimizer",
    "build_schedule",
    "daformer_optim",
    "deeplab_optim",
    "lr_lambda",
    "split_no_decay",
]


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Args:
        name: ``sgd``, ``adam`` or ``adamw``.
        lr: base learning rate (of the new layers; the backbone gets ``lr * backbone_lr_mult``).
        momentum / nesterov: SGD only.
        betas: Adam(W) only.
        weight_decay: L2 / decoupled weight decay.
        backbone_lr_mult: multiplier for pretrained backbone parameters (0.1 is the usual fine-tuning value).
        scheduler: ``none``; ``poly`` (``(1 - t/T)^power``, DeepLab/CBST); ``cosine`` (to ``min_lr_ratio``);
            ``inv`` (DANN's ``(1 + gamma * t/T)^-power``); ``linear`` (CycleGAN: constant, then linear decay to 0
            from the fraction ``decay_start`` of training); ``step`` (× ``step_factor`` at each fraction of
            training in ``milestones``: StepLR(7, 0.1) over 20 epochs is ``milestones: [0.35, 0.7]``).
        warmup_steps: linear warm-up steps.
        warmup_mode: ``prefix``: the factor ramps as ``(t + 1) / warmup_steps``, then the schedule runs over the
            remaining steps; ``scale`` (mmcv/mmseg, DAFormer): the schedule runs over all steps from step 0, and during
            the first ``warmup_steps`` it is multiplied by ``warmup_ratio + (1 - warmup_ratio) * t / warmup_steps``.
        warmup_ratio: the factor at step 0 of the ``scale`` warm-up (DAFormer: 1e-6).
        no_decay_keys: parameters whose name (as in the method, e.g. ``model.backbone.vit.blocks.0.norm1.weight``)
            contains one of these strings get no weight decay; each group is split into itself and
            ``<name>.no_decay`` (DAFormer/mmseg: ``[norm, pos_embed, pos_block]``: norm layers and position
            embeddings; other biases keep their decay).
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    backbone_lr_mult: float = 1.0
    scheduler: Literal["none", "poly", "cosine", "inv", "linear", "step"] = "none"
    power: float = 0.9
    gamma: float = 10.0
    inv_power: float = 0.75
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    decay_start: float = 0.5
    warmup_mode: Literal["prefix", "scale"] = "prefix"
    warmup_ratio: float = 0.0
    no_decay_keys: list[str] = field(default_factory=list)
    milestones: tuple[float, ...] = ()
    step_factor: float = 0.1


def deeplab_optim() -> OptimConfig:
    """DeepLabV2 fine-tuning in AdaptSegNet/AdvEnt: SGD, backbone lr 2.5e-4 and classifier 10× (2.5e-3), momentum
    0.9, weight decay 5e-4, poly schedule with power 0.9."""
    return OptimConfig(name="sgd", lr=2.5e-3, backbone_lr_mult=0.1, momentum=0.9, weight_decay=5e-4, scheduler="poly",
                       power=0.9)


def daformer_optim() -> OptimConfig:
    """DAFormer (Hoyer et al., CVPR 2022; its mmseg config): AdamW, backbone lr 6e-5 and head 10× (6e-4), betas
    (0.9, 0.999), weight decay 0.01 except on norm and position-embedding parameters, poly schedule of power 1.0
    after a 1,500-step linear warm-up from 1e-6 of the lr (mmcv's rule: the warm-up scales the poly factor)."""
    return OptimConfig(name="adamw", lr=6e-4, backbone_lr_mult=0.1, betas=(0.9, 0.999), weight_decay=0.01,
                       scheduler="poly", power=1.0, warmup_steps=1500, warmup_mode="scale", warmup_ratio=1e-6,
                       no_decay_keys=["norm", "pos_embed", "pos_block"])


def _check_warmup(cfg: OptimConfig) -> None:
    if cfg.warmup_mode not in ("prefix", "scale"):
        raise ValueError(f"optim.warmup_mode must be 'prefix' or 'scale', got {cfg.warmup_mode!r}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if not 0.0 <= cfg.warmup_ratio <= 1.0:
        raise ValueError(f"optim.warmup_ratio must be in [0, 1], got {cfg.warmup_ratio}")
    if cfg.warmup_ratio != 0.0 and cfg.warmup_mode != "scale":
        raise ValueError(f"optim.warmup_ratio ({cfg.warmup_ratio}) is only used with warmup_mode: scale, "
                         f"got warmup_mode: {cfg.warmup_mode}")


def lr_lambda(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at step ``t`` for ``cfg.scheduler`` over ``total_steps`` steps (with the warm-up of
    ``cfg.warmup_mode``)."""
    _check_warmup(cfg)
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if cfg.warmup_mode == "scale":
            ramp = 1.0
            if step < cfg.warmup_steps:
                ramp = cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * step / cfg.warmup_steps
            return ramp * schedule(min(1.0, step / total))
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return schedule(min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))

    def schedule(t: float) -> float:
        if cfg.scheduler == "poly":
            return (1.0 - t) ** cfg.power
        if cfg.scheduler == "cosine":
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if cfg.scheduler == "inv":
            return (1.0 + cfg.gamma * t) ** (-cfg.inv_power)
        if cfg.scheduler == "linear":
            return 1.0 if t <= cfg.decay_start else max(0.0, (1.0 - t) / max(1e-12, 1.0 - cfg.decay_start))
        if cfg.scheduler == "step":
            return cfg.step_factor ** sum(t >= m for m in cfg.milestones)
        return 1.0

    return factor


def split_no_decay(
    groups: list[dict[str, Any]], keys: list[str], named_parameters: Iterable[tuple[str, torch.nn.Parameter]]
) -> list[dict[str, Any]]:
    """Split each group into its parameters that keep weight decay and, right after it, ``<name>.no_decay`` with
    ``weight_decay`` 0: those whose name contains one of ``keys`` (mmseg's ``decay_mult=0`` custom keys). Other
    settings (lr, labels) are kept by both halves; empty halves are dropped."""
    if any(not isinstance(k, str) or not k for k in keys):
        raise ValueError(f"optim.no_decay_keys must be non-empty strings, got {keys}")
    name_of = {id(p): n for n, p in named_parameters}
    out: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        decay, no_decay = [], []
        for p in group["params"]:
            name = name_of.get(id(p))
            if name is None:
                raise ValueError(f"optim.no_decay_keys: a parameter of group {group.get('name', g)!r} "
                                 f"{tuple(p.shape)} is not among the module's named parameters")
            (no_decay if any(k in name for k in keys) else decay).append(p)
        if decay:
            out.append({**group, "params": decay})
        if no_decay:
            out.append({**group, "params": no_decay, "weight_decay": 0.0,
                        "name": f"{group.get('name', f'group{g}')}.no_decay"})
    return out


def build_optimizer(
    groups: list[dict[str, Any]],
    cfg: OptimConfig,
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over parameter ``groups`` (``{"params": [...], "lr": ...}``; empty groups dropped).

    With ``cfg.no_decay_keys``, ``named_parameters`` (the module's, which names every grouped parameter) is needed
    to find the parameters without weight decay (:func:`split_no_decay`)."""
    groups = [g for g in groups if g["params"]]
    if cfg.no_decay_keys:
        if named_parameters is None:
            raise ValueError("optim.no_decay_keys needs the parameters' names: call build_optimizer with "
                             "named_parameters (DAMethod.build_optimizer passes the module's)")
        groups = split_no_decay(groups, list(cfg.no_decay_keys), named_parameters)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    opt_cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return opt_cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR | None:
    """The per-step schedule of ``cfg`` over ``total_steps`` steps, or None for a constant lr without warm-up."""
    if cfg.scheduler == "none" and cfg.warmup_steps == 0:
        return None
    return LambdaLR(optimizer, lr_lambda(cfg, total_steps))
