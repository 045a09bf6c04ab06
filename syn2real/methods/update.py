"""One update step for methods with several optimisers (the role of pytorch-adapt's ``OptimizerHook``).

A manually optimised method (ADDA, output-space adaptation, CyCADA, EnlightenGAN) describes each of its updates as
*which optimiser steps, which networks stay frozen while its losses are computed, and the losses*; this module does
the rest the same way for all of them::

    with optimizer_update(self, opt_g, freeze=[self.discriminator]) as update:
        losses = self.generator_losses(...)           # computed with the discriminator frozen
        update.backward(losses["loss"], {"generator_gan": losses["gan"], ...})

Entering zeroes the optimiser's gradients and freezes ``freeze`` (their ``requires_grad`` flags are restored on
exit); each :meth:`OptimizerUpdate.backward` checks its named terms for NaN/inf (the finite-loss guard, one sync),
optionally folds in the augmentation's auxiliary losses, and backpropagates outside DDP's reducer
(:func:`~syn2real.core.distributed.backward_local`); leaving the block averages exactly this optimiser's
gradients over ranks and steps it (Lightning runs ``on_before_optimizer_step`` inside ``step()``: gradient clipping
after 16-mixed unscaling), then logs the terms under ``train/``. A block may backpropagate several times (a source
loss, then a target loss: the first graph is freed before the second forward) and steps once.

The optimiser is an argument, so a unit test drives an update with a plain ``torch.optim`` optimiser and no trainer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import lightning as L
import torch
from torch import nn

from syn2real.core.distributed import average_gradients, backward_local
from syn2real.core.guard import guard_losses

__all__ = ["OptimizerUpdate", "frozen", "optimizer_update", "step_schedulers"]


@contextmanager
def frozen(modules: Sequence[nn.Module]) -> Iterator[None]:
    """``requires_grad_(False)`` on every parameter of ``modules`` inside the block; each flag restored afterwards."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class OptimizerUpdate:
    """The backward passes of one optimiser update (see the module docstring); made by :func:`optimizer_update`."""

    def __init__(self, module: L.LightningModule, enabled: bool) -> None:
        self.module = module
        self.enabled = enabled
        self.terms: dict[str, torch.Tensor] = {}
        self.backward_passes = 0

    def backward(
        self, loss: torch.Tensor, terms: dict[str, torch.Tensor] | None = None, fold_augment: bool = False,
        augment_prefix: str = "",
    ) -> torch.Tensor:
        """Check ``terms`` (default ``{"loss": loss}``) for NaN/inf, add the queued augmentation losses when
        ``fold_augment`` (named ``augment_prefix + name``), and backpropagate the total on this rank only.
        Returns the total backpropagated. A disabled update (e.g. ADDA's gate closed) computes nothing."""
        terms = dict(terms) if terms is not None else {"loss": loss}
        if fold_augment:
            extra = self.module.pop_augment_losses()
            terms.update({augment_prefix + k: v for k, v in extra.items()})
            if extra:
                loss = loss + sum(extra.values())
        self.terms.update(terms)
        if not self.enabled:
            return loss
        guard_losses(self.module, terms)
        backward_local(self.module, loss)
        self.backward_passes += 1
        return loss


@contextmanager
def optimizer_update(
    module: L.LightningModule,
    optimizer: torch.optim.Optimizer,
    freeze: Sequence[nn.Module] = (),
    enabled: bool = True,
    log: bool = True,
    batch_size: int | None = None,
) -> Iterator[OptimizerUpdate]:
    """One update of ``optimizer``: zero its gradients, freeze ``freeze`` while the block computes and backpropagates
    losses (:meth:`OptimizerUpdate.backward`), then average this optimiser's gradients over ranks, step and log the
    terms as ``train/<name>`` (when ``log`` and a trainer is attached). ``enabled=False`` zeroes the gradients and
    skips backward and step (a gated update)."""
    optimizer.zero_grad()
    update = OptimizerUpdate(module, enabled)
    with frozen(freeze):
        yield update
    if enabled and update.backward_passes:
        average_gradients(module, optimizer)
        optimizer.step()
    if log and update.terms and module._trainer is not None:
        module.log_dict({f"train/{k}": torch.as_tensor(v).detach() for k, v in update.terms.items()},
                        batch_size=batch_size)


def step_schedulers(module: L.LightningModule) -> None:
    """Step every lr scheduler of a manually optimised module once (one call per training batch)."""
    schedulers = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()

