"""The one update step of manually optimised methods (``optimizer_update``), driven with plain torch optimisers and
no trainer: what it freezes, checks, backpropagates and steps, against a hand-written reference update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from syn2real.core.guard import NonFiniteLossError
from syn2real.methods.update import frozen, optimizer_update


class _Two(nn.Module):
    """A generator-like and a discriminator-like linear layer, plus the attributes the guard reads."""

    nan_guard = True
    global_step = 0

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.g, self.d = nn.Linear(3, 3), nn.Linear(3, 1)
        self._trainer = None
        self._queued: dict[str, torch.Tensor] = {}

    def pop_augment_losses(self) -> dict[str, torch.Tensor]:
        out, self._queued = self._queued, {}
        return out


def _reference(module: _Two, x: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
    """The update written by hand: d(g(x)).mean() minimised w.r.t. g only, plain SGD."""
    g = nn.Linear(3, 3)
    g.load_state_dict(module.g.state_dict())
    loss = module.d(g(x)).mean()
    grads = torch.autograd.grad(loss, list(g.parameters()))
    return {n: p.detach() - lr * gr for (n, p), gr in zip(g.named_parameters(), grads)}


def test_update_freezes_the_others_steps_its_optimiser_and_matches_a_hand_written_update() -> None:
    m = _Two()
    x = torch.randn(4, 3)
    expected = _reference(m, x, lr=0.1)
    d_before = {k: v.clone() for k, v in m.d.state_dict().items()}
    m.d.bias.requires_grad_(False)  # a flag set before the update is restored as it was, not to True
    opt = torch.optim.SGD(m.g.parameters(), lr=0.1)
    with optimizer_update(m, opt, freeze=[m.d], log=False) as update:
        assert not any(p.requires_grad for p in m.d.parameters())
        loss = m.d(m.g(x)).mean()
        update.backward(loss, {"generator": loss})
    for name, value in m.g.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name])
    assert all(p.grad is None for p in m.d.parameters())  # the frozen network got no gradient
    assert m.d.weight.requires_grad and not m.d.bias.requires_grad
    assert all(torch.equal(v, d_before[k]) for k, v in m.d.state_dict().items())
    assert set(update.terms) == {"generator"} and update.backward_passes == 1


def test_two_backward_passes_accumulate_then_one_step() -> None:
    m = _Two()
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    opt = torch.optim.SGD(m.g.parameters(), lr=1.0)
    start = m.g.weight.detach().clone()
    with optimizer_update(m, opt, log=False) as update:
        update.backward(m.g(x1).sum())
        update.backward(m.g(x2).sum())
    # d/dW of sum(W x + b) over a batch = sum of the inputs, per output row
    expected = start - (x1.sum(0) + x2.sum(0)).expand(3, 3)
    torch.testing.assert_close(m.g.weight.detach(), expected)
    assert update.backward_passes == 2


def test_non_finite_loss_stops_before_any_update() -> None:
    m = _Two()
    opt = torch.optim.SGD(m.g.parameters(), lr=0.1)
    before = m.g.weight.detach().clone()
    with pytest.raises(NonFiniteLossError, match="generator"):
        with optimizer_update(m, opt, freeze=[m.d], log=False) as update:
            loss = m.g(torch.randn(2, 3)).sum() * float("nan")
            update.backward(loss, {"generator": loss})
    assert torch.equal(m.g.weight, before)
    assert all(p.requires_grad for p in m.d.parameters())  # unfrozen although the block raised


def test_a_closed_gate_zeroes_gradients_and_neither_backpropagates_nor_steps() -> None:
    m = _Two()
    opt = torch.optim.SGD(m.g.parameters(), lr=0.1)
    m.g(torch.randn(2, 3)).sum().backward()  # a stale gradient from earlier
    before = m.g.weight.detach().clone()
    with optimizer_update(m, opt, enabled=False, log=False) as update:
        update.backward(m.g(torch.randn(2, 3)).sum() * float("nan"), {"gated": torch.tensor(float("nan"))})
    assert torch.equal(m.g.weight, before) and m.g.weight.grad is None and update.backward_passes == 0


def test_augmentation_losses_are_folded_into_the_total_and_checked() -> None:
    m = _Two()
    opt = torch.optim.SGD(m.g.parameters(), lr=1.0)
    x = torch.randn(4, 3)
    m._queued = {"jacobian": (m.g.weight ** 2).sum()}
    start = m.g.weight.detach().clone()
    with optimizer_update(m, opt, log=False) as update:
        total = update.backward(m.g(x).sum(), {"task": torch.tensor(0.0)}, fold_augment=True, augment_prefix="task_")
    assert set(update.terms) == {"task", "task_jacobian"} and m._queued == {}
    assert torch.isfinite(total)
    torch.testing.assert_close(m.g.weight.detach(), start - (x.sum(0).expand(3, 3) + 2 * start))


def test_frozen_restores_each_flag() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.weight.requires_grad_(False)
    with frozen([a, b]):
        assert not any(p.requires_grad for p in [*a.parameters(), *b.parameters()])
    assert a.weight.requires_grad and a.bias.requires_grad and not b.weight.requires_grad and b.bias.requires_grad
