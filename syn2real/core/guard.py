"""The NaN/inf guard: stop training with a clear error *before* a non-finite loss or gradient reaches the weights.

:func:`check_finite` is called on every loss term of a step (``DAMethod.training_step`` and, in the manually
optimised methods, before each ``manual_backward``). It raises :class:`NonFiniteLossError` naming the term, its value,
the global step, the method and the last checkpoint on disk, which is never overwritten afterwards (the exception
leaves the training loop before the checkpoint callback runs again). The ``--nan_guard.enabled false`` switch of the
CLI (:class:`syn2real.callbacks.nan_guard.NaNGuard`, which also checks gradients) turns it off.

Under DDP the verdict is all-reduced (one scalar per check): the rank with the non-finite term raises the error that
names it, every other rank raises at the same step instead of waiting forever in the next gradient all-reduce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from syn2real.io import non_finite_entry, read_checkpoint

__all__ = [
    "ADVICE", "NonFiniteGradientError", "NonFiniteLossError", "check_finite", "describe_checkpoint", "guard_losses",
    "last_good_checkpoint",
]

ADVICE = "lower the learning rate, enable gradient clipping or use bf16 instead of 16-mixed"


class NonFiniteLossError(FloatingPointError):
    """A loss term of a training step is NaN or ±inf."""


class NonFiniteGradientError(FloatingPointError):
    """A parameter's gradient is NaN or ±inf after backward (``--nan_guard.check_grads true``)."""


def last_good_checkpoint(trainer: Any) -> str | None:
    """The newest checkpoint written by the trainer's checkpoint callbacks (``last.ckpt`` first), or None."""
    for callback in getattr(trainer, "checkpoint_callbacks", None) or []:
        path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        if path:
            return str(path)
    return None


def describe_checkpoint(checkpoint: str | None) -> str:
    """Names the last checkpoint as good only after checking on disk that every floating-point tensor of its weights
    and buffers is finite (a BatchNorm ``running_var`` can turn inf steps before a loss does)."""
    if not checkpoint:
        return "no checkpoint was written before it"
    try:
        state = read_checkpoint(checkpoint, "a checkpoint").get("state_dict", {})
    except Exception as err:  # noqa: BLE001 - only describing; the training error is what is raised
        return f"the last checkpoint {checkpoint} cannot be read ({type(err).__name__}), so no good checkpoint is known"
    bad = non_finite_entry(state)
    if bad is not None:
        return (f"the last checkpoint {checkpoint} is not good either ('{bad}' holds NaN/inf): restart from an "
                "earlier checkpoint or from scratch")
    return f"the last good checkpoint is {checkpoint} (weights and buffers checked finite)"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_ranks_ok(local_ok: torch.Tensor) -> bool:
    """``local_ok`` (a bool tensor on this rank's device) AND-ed over all ranks: one all-reduce of one number."""
    flag = local_ok.to(torch.float32).reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def check_finite(
    losses: dict[str, torch.Tensor], step: int, method: str, checkpoint: str | None = None,
    sync_ranks: bool | None = None,
) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite term of ``losses`` (name -> scalar tensor).

    One device synchronisation for all terms; the per-term search only runs once something is wrong. With
    ``sync_ranks`` (default: whenever a process group of more than one rank is initialised) every rank takes part in
    one all-reduce of the verdict, so all ranks stop at the same step; every rank must then call it equally often.
    """
    tensors = {k: v for k, v in losses.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    sync = _distributed() if sync_ranks is None else sync_ranks
    if not tensors and not sync:
        return
    if tensors:
        flags = torch.stack([torch.isfinite(v.detach()).all() for v in tensors.values()])
        local_ok = flags.all()
    else:
        flags = torch.ones(0, dtype=torch.bool)
        local_ok = torch.tensor(True)
    if sync:
        if dist.get_backend() == "nccl" and local_ok.device.type != "cuda":
            local_ok = local_ok.cuda()
        if _all_ranks_ok(local_ok):
            return
    elif bool(local_ok):
        return
    for (name, value), ok in zip(tensors.items(), flags.tolist()):
        if not ok:
            shown = float(value.detach().float().reshape(-1)[~torch.isfinite(value.detach().float().reshape(-1))][0])
            rank = f" on rank {dist.get_rank()}" if sync else ""
            raise NonFiniteLossError(
                f"non-finite loss term '{name}' = {shown} at global step {step}{rank} (method {method}); "
                f"{describe_checkpoint(checkpoint)} — {ADVICE}"
            )
    raise NonFiniteLossError(
        f"a loss term was non-finite on another rank at global step {step} (method {method}; this is rank "
        f"{dist.get_rank()}, the failing rank's error names the term); {describe_checkpoint(checkpoint)} — {ADVICE}"
    )


def guard_losses(module: Any, losses: dict[str, torch.Tensor], prefix: str = "train/") -> None:
    """:func:`check_finite` on a LightningModule's terms (named ``prefix + key``) unless ``module.nan_guard`` is
    False; the step, method name and last checkpoint come from the module and its trainer."""
    if not getattr(module, "nan_guard", True):
        return
    trainer = getattr(module, "_trainer", None)
    check_finite(
        {f"{prefix}{k}": v for k, v in losses.items()},
        int(getattr(trainer, "global_step", 0) or 0),
        type(module).__name__,
        last_good_checkpoint(trainer) if trainer is not None else None,
    )
