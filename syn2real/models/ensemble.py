"""Predictors that average several softmax outputs: deep ensembles (Lakshminarayanan et al. 2017, K independently
seeded members) and MC dropout (Gal & Ghahramani 2016, T stochastic passes with dropout kept on).

Both return **log p̄**, the log of the mean of the members' softmax probabilities, computed stably as
``logsumexp_k log_softmax(z_k) − log K``. Anything that treats the output as logits (``softmax``, ``argmax``,
cross-entropy, an attack's gradient) then sees the averaged predictive distribution: ``softmax(log p̄) = p̄``.

The members' disagreement, kept per sample in ``last_disagreement`` after every forward, is the mean KL divergence
of the members to their mean, (1/K) Σ_k KL(p_k ‖ p̄) = H(p̄) − (1/K) Σ_k H(p_k) (nats): the mutual information between
the prediction and the member (BALD's score for MC dropout), 0 when all members agree, at most log K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["EnsembleClassifier", "MCDropout", "dropout_layers", "log_mean_softmax", "member_disagreement"]

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def log_mean_softmax(outputs: Sequence[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """log of the mean over members of softmax(outputs[k], dim), in float32 (or wider), without underflow."""
    if not outputs:
        raise ValueError("log_mean_softmax needs at least one member's output")
    logp = torch.stack([o.float().log_softmax(dim=dim) if o.dtype in (torch.float16, torch.bfloat16)
                        else o.log_softmax(dim=dim) for o in outputs])
    return torch.logsumexp(logp, dim=0) - math.log(len(outputs))


def member_disagreement(outputs: Sequence[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """(1/K) Σ_k KL(softmax(outputs[k]) ‖ p̄) per sample (the class dimension ``dim`` reduced), in nats."""
    logp = torch.stack([o.detach().float().log_softmax(dim=dim) for o in outputs])  # (K, ...)
    log_mean = torch.logsumexp(logp, dim=0) - math.log(len(outputs))
    kl = (logp.exp() * (logp - log_mean.unsqueeze(0))).sum(dim=dim + 1)
    return kl.mean(dim=0).clamp_min(0)  # rounding can leave -1e-8 where the members agree


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropout modules of ``model`` with a rate > 0 (``nn.Dropout*``, timm's ``DropPath`` with drop_prob > 0)."""
    found = []
    for module in model.modules():
        if isinstance(module, _DROPOUT_TYPES) and float(module.p) > 0:
            found.append(module)
        elif type(module).__name__ == "DropPath" and float(getattr(module, "drop_prob", 0.0)) > 0:
            found.append(module)
    return found


class EnsembleClassifier(nn.Module):
    """K networks as one predictor: ``forward(x)`` = log of the mean of their softmax outputs (class dimension 1).

    Members are evaluated one after the other (memory of one member's activations); ``last_disagreement`` holds the
    per-sample disagreement of the latest forward (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.last_disagreement: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [member(x) for member in self.members]
        for out in outputs:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"ensemble members must return a tensor of logits, got {type(out).__name__}")
        self.last_disagreement = member_disagreement(outputs)
        return log_mean_softmax(outputs)


class MCDropout(nn.Module):
    """MC dropout: ``passes`` forward passes of ``model`` with its dropout layers sampling (in eval mode too, the
    rest of the network, BatchNorm included, in whatever mode it is), averaged as log of the mean softmax.

    Raises when ``model`` has no dropout layer with a rate > 0: every pass would be identical. ``last_disagreement``
    is the passes' disagreement (BALD's mutual information). The masks come from torch's global generator, so a seeded
    run reproduces."""

    def __init__(self, model: nn.Module, passes: int) -> None:
        super().__init__()
        if int(passes) < 1:
            raise ValueError(f"MC dropout needs passes >= 1, got {passes}")
        self.layers = dropout_layers(model)
        if not self.layers:
            raise ValueError(
                f"MC dropout: {type(model).__name__} has no dropout layer with a rate > 0, so its {passes} passes would "
                "all be the same; train with dropout (classification: task.init_args.network.dropout, e.g. 0.1)"
            )
        self.model = model
        self.passes = int(passes)
        self.last_disagreement: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modes = [layer.training for layer in self.layers]
        for layer in self.layers:
            layer.train(True)
        try:
            outputs = [self.model(x) for _ in range(self.passes)]
        finally:
            for layer, mode in zip(self.layers, modes):
                layer.train(mode)
        self.last_disagreement = member_disagreement(outputs)
        return log_mean_softmax(outputs)
