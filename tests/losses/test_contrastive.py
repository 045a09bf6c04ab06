from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from syn2real.losses.contrastive import apool, apool_weights, hyperspherical_energy, info_nce, info_nce_logits
from syn2real.models.contrastive import NegativeQueue, ProjectionHead, ema_update


def test_info_nce_hand_value() -> None:
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])  # q·k = 0.6
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # q·n = 0, -1
    tau = 0.5
    logits = info_nce_logits(q, k, queue, tau)
    assert logits.tolist()[0] == pytest.approx([1.2, 0.0, -2.0])
    expected = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0) + math.exp(-2.0)))
    assert float(info_nce(q, k, queue, tau)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_two_queries_mean_and_gradient_only_to_queries() -> None:
    q = F.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    k = F.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    queue = F.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    loss = info_nce(q, k, queue, 0.07)
    by_hand = []
    for i in range(2):
        logits = torch.cat([(q[i] * k[i]).sum().view(1), queue @ q[i]]) / 0.07
        by_hand.append(-torch.log_softmax(logits, 0)[0])
    assert float(loss) == pytest.approx(float(sum(by_hand) / 2), rel=1e-5)
    loss.backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_apool_weights_sum_to_one_and_prefer_the_mean_direction() -> None:
    feats = torch.randn(3, 8, 5, 4).relu()
    for sim in ("dot", "cosine"):
        w = apool_weights(feats, sim)
        assert w.shape == (3, 20) and torch.allclose(w.sum(1), torch.ones(3)) and (w >= 0).all()
    # constant map: uniform weights, A-pool = average pooling
    const = torch.ones(1, 2, 2, 2)
    assert torch.allclose(apool_weights(const), torch.full((1, 4), 0.25))
    # hand value: two locations v1 = (1, 0), v2 = (0, 3); mean (0.5, 1.5); scores 0.5, 4.5
    fmap = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]]]])  # (1, C=2, H=1, W=2)
    w1 = 1 / (1 + math.exp(4.0))
    assert apool_weights(fmap).tolist()[0] == pytest.approx([w1, 1 - w1], rel=1e-5)
    assert apool(fmap).tolist()[0] == pytest.approx([w1, 3 * (1 - w1)], rel=1e-5)


def test_hyperspherical_energy_hand_values() -> None:
    v = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # normalised: orthogonal, distance √2
    assert float(hyperspherical_energy(v, "sum")) == pytest.approx(2 / math.sqrt(2), rel=1e-6)
    assert float(hyperspherical_energy(v)) == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    # three unit vectors 120° apart: pairwise distance √3, 6 ordered pairs
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    tri = torch.stack([ang.cos(), ang.sin()], 1)
    assert float(hyperspherical_energy(tri, "sum")) == pytest.approx(6 / math.sqrt(3), rel=1e-5)
    # collapsed features have a higher energy than spread ones
    collapsed = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1]])
    assert hyperspherical_energy(collapsed) > hyperspherical_energy(tri)


def test_queue_enqueue_order_wraps_and_keeps_the_newest() -> None:
    queue = NegativeQueue(size=4, dim=2)
    a = torch.arange(6, dtype=torch.float32).view(3, 2)
    queue.enqueue(a)
    assert int(queue.ptr) == 3 and torch.equal(queue.keys[:3], a)
    b = torch.arange(100, 106, dtype=torch.float32).view(3, 2)
    queue.enqueue(b)  # rows 3, 0, 1: the oldest (a[0], a[1]) are dequeued
    assert int(queue.ptr) == 2
    assert torch.equal(queue.keys, torch.stack([b[1], b[2], a[2], b[0]]))
    c = torch.arange(200, 212, dtype=torch.float32).view(6, 2)  # more than the queue holds: the last 4 stay
    queue.enqueue(c)
    assert int(queue.ptr) == 0
    assert torch.equal(queue.keys, torch.stack([c[2], c[3], c[4], c[5]]))
    with pytest.raises(ValueError, match="enqueue expects"):
        queue.enqueue(torch.zeros(2, 3))


def test_initial_queue_is_normalised_and_in_the_state_dict() -> None:
    queue = NegativeQueue(size=16, dim=8)
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(16))
    assert set(queue.state_dict()) == {"keys", "ptr"}


def test_ema_update_and_projection_head() -> None:
    target, source = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    t0, s0 = target.weight.detach().clone(), source.weight.detach().clone()
    ema_update(target, source, 0.9)
    assert torch.allclose(target.weight, 0.9 * t0 + 0.1 * s0)
    head = ProjectionHead(16, 128)
    out = head(torch.randn(4, 16))
    assert out.shape == (4, 128) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Linear"] and head[0].out_features == 16
