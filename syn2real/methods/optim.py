"""Optimiser and learning-rate schedule settings (``optim:`` of every method) and their construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["OptimConfig", "build_optimizer", "build_schedule", "deeplab_optim", "lr_lambda"]


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
        warmup_steps: linear warm-up steps before the schedule.
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
    milestones: tuple[float, ...] = ()
    step_factor: float = 0.1


def deeplab_optim() -> OptimConfig:
    """DeepLabV2 fine-tuning in AdaptSegNet/AdvEnt: SGD, backbone lr 2.5e-4 and classifier 10× (2.5e-3), momentum
    0.9, weight decay 5e-4, poly schedule with power 0.9."""
    return OptimConfig(name="sgd", lr=2.5e-3, backbone_lr_mult=0.1, momentum=0.9, weight_decay=5e-4, scheduler="poly",
                       power=0.9)


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Multiplier of the base lr at step ``t`` for ``cfg.scheduler`` over ``total_steps`` steps."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
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


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over parameter ``groups`` (``{"params": [...], "lr": ...}``; empty groups dropped)."""
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    opt_cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return opt_cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR | None:
    """The per-step schedule of ``cfg`` over ``total_steps`` steps, or None for a constant lr without warm-up."""
    if cfg.scheduler == "none" and cfg.warmup_steps == 0:
        return None
    return LambdaLR(optimizer, lr_lambda(cfg, total_steps))
