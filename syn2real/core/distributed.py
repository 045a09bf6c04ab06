"""Gradients and values across DDP ranks for manually optimised methods (one all-reduce per optimiser step) and
means over the global batch."""

from __future__ import annotations

import lightning as L
import torch

__all__ = ["average_gradients", "backward_local", "global_mean_weight", "rank_mean"]


def backward_local(module: L.LightningModule, loss: torch.Tensor) -> None:
    """``manual_backward(loss)`` without DDP's gradient all-reduce: gradients only accumulate on this rank.

    Manual optimisation with several optimisers (GANs, ADDA, AdaptSegNet) backpropagates several losses per batch,
    each into a different subset of the networks (the others frozen or detached). DDP's reducer expects every trained
    parameter to receive a gradient in every backward pass (else "Expected to have finished reduction in the prior
    iteration"), so each backward runs outside it and :func:`average_gradients` then averages exactly the parameters
    of the optimiser about to step: one all-reduce per optimiser, no ``find_unused_parameters``."""
    # DDP's no_sync(); absent on single-device strategies
    if module._trainer is None:  # a unit test driving the update by hand, with plain torch optimisers
        loss.backward()
        return
    block = getattr(getattr(module._trainer, "strategy", None), "block_backward_sync", None)
    if block is None:
        module.manual_backward(loss)
        return
    with block():
        module.manual_backward(loss)


def average_gradients(module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
    """Average the gradients of ``optimizer``'s parameters over all ranks (a no-op in one process).

    Parameters without a gradient are skipped; which ones have none is fixed by the step's graph, the same on every
    rank (a rank-dependent branch around a backward pass would make the ranks disagree and must be avoided)."""
    world = getattr(module._trainer, "world_size", 1)
    if world == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def rank_mean(module: L.LightningModule, value: torch.Tensor) -> torch.Tensor:
    """The mean of a per-rank scalar over all ranks (itself in one process): a decision taken from it, such as ADDA's
    gate, is then the same on every rank and, with equal per-rank batches, that of the single-process global batch."""
    if getattr(module._trainer, "world_size", 1) == 1:
        return value
    return module.trainer.strategy.reduce(value.detach().float().clone(), reduce_op="mean")


def global_mean_weight(module: L.LightningModule, count: torch.Tensor) -> torch.Tensor:
    """``count / mean over ranks of count`` for this rank's number of loss elements (kept samples, labelled pixels).

    A loss that is a mean over this rank's ``count`` elements, times this weight, has DDP's averaged gradient of the
    mean over the elements of the global batch, as in one process, instead of a mean of per-rank means; in one
    process the weight is exactly 1 (0 when there are no elements)."""
    count = count.float()
    return count / rank_mean(module, count).clamp_min(1e-12)
