"""DRST's pieces: the density ratio of a domain classifier (recovering a known log-ratio on two Gaussians), the
robust classifier softmax(r·f) (flatter where r is small) and its loss with the robust or the autograd gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from syn2real.losses.drst import density_ratio, robust_cross_entropy, robust_logits, robust_probabilities


def test_density_ratio_is_odds_times_the_domain_prior_correction() -> None:
    logits = torch.tensor([0.0, math.log(3.0), -2.0])
    # d/(1-d) = exp(logit); trained on 4 source per 1 target sample: r = odds · n_t/n_s
    r = density_ratio(logits, n_source=4, n_target=1)
    assert torch.allclose(r, torch.tensor([0.25, 0.75, math.exp(-2.0) / 4]), rtol=1e-6)
    assert torch.allclose(density_ratio(logits[:, None]), logits.exp())  # (N, 1) as well, balanced batches
    clamped = density_ratio(torch.tensor([-50.0, 0.0, 50.0]), ratio_min=0.1, ratio_max=10.0)
    assert torch.allclose(clamped, torch.tensor([0.1, 1.0, 10.0]))
    with pytest.raises(ValueError, match="ratio_min"):
        density_ratio(logits, ratio_min=2.0, ratio_max=1.0)
    with pytest.raises(ValueError, match="shape"):
        density_ratio(torch.zeros(2, 3))


def test_logistic_domain_classifier_recovers_the_log_ratio_of_two_gaussians() -> None:
    """p_s = N(+1, 1), p_t = N(−1, 1) in 1-D: log p_s/p_t = 2x. Unbalanced samples (3000 source, 1000 target)
    make the classifier's logit 2x + log 3; the prior correction gives back 2x."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(3000, generator=g) + 1.0
    xt = torch.randn(1000, generator=g) - 1.0
    x = torch.cat([xs, xt])[:, None]
    y = torch.cat([torch.ones(3000), torch.zeros(1000)])
    w = torch.zeros(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x[:, 0] * w + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    grid = torch.linspace(-2, 2, 9)
    with torch.no_grad():
        r = density_ratio(grid * w + b, n_source=3000, n_target=1000)
    assert torch.allclose(r.log(), 2 * grid, atol=0.25)
    assert r[-1] > 20 and r[0] < 0.05  # large on the source side, small on the target side


def test_robust_prediction_flattens_as_the_ratio_shrinks() -> None:
    logits = torch.tensor([[3.0, 1.0, -1.0, 0.5]]).repeat(4, 1)
    ratio = torch.tensor([4.0, 1.0, 0.25, 1e-4])
    p = robust_probabilities(logits, ratio)
    entropy = -(p * p.log()).sum(1)
    assert torch.all(entropy[1:] > entropy[:-1])  # smaller ratio, flatter prediction
    assert torch.allclose(p[1], logits[1].softmax(0))  # r = 1: the plain classifier
    assert torch.allclose(p[3], torch.full((4,), 0.25), atol=1e-3)  # r → 0: uniform
    assert torch.equal(p.argmax(1), torch.zeros(4, dtype=torch.long))  # the ratio never changes the decision
    with pytest.raises(ValueError, match="ratio"):
        robust_logits(logits, ratio[:2])


def test_robust_loss_value_and_gradients_by_hand() -> None:
    """f = [[1, 0], [0, 2]], r = [0.5, 2], y = [0, 1]: the value is CE(r·f); the robust gradient in f is
    (softmax(r·f) − onehot)/N, autograd's is r times it."""
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    r = torch.tensor([0.5, 2.0])
    y = torch.tensor([0, 1])
    p0 = torch.tensor([math.exp(0.5), 1.0]) / (math.exp(0.5) + 1.0)
    p1 = torch.tensor([1.0, math.exp(4.0)]) / (1.0 + math.exp(4.0))
    value = (-math.log(p0[0]) - math.log(p1[1])) / 2
    robust_grad = torch.stack([p0 - torch.tensor([1.0, 0.0]), p1 - torch.tensor([0.0, 1.0])]) / 2
    for gradient, expected in (("robust", robust_grad), ("autograd", robust_grad * r[:, None])):
        logits = f.clone().requires_grad_(True)
        ratio = r.clone().requires_grad_(True)
        loss = robust_cross_entropy(logits, ratio, y, gradient=gradient)
        loss.backward()
        assert loss.item() == pytest.approx(value, rel=1e-6)
        assert torch.allclose(logits.grad, expected, atol=1e-6), gradient
        assert ratio.grad is None  # the ratio is a constant of this loss


def test_robust_loss_skips_unlabelled_samples() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, 3, generator=g, requires_grad=True)
    r = torch.rand(5, generator=g) + 0.1
    y = torch.tensor([2, -1, 0, -1, 1])
    loss = robust_cross_entropy(f, r, y)
    kept = y >= 0
    assert loss.item() == pytest.approx(F.cross_entropy(f[kept] * r[kept, None], y[kept]).item(), rel=1e-6)
    loss.backward()
    assert torch.all(f.grad[~kept] == 0)
    none = robust_cross_entropy(f, r, torch.full((5,), -1))
    assert none.item() == 0.0
    with pytest.raises(ValueError, match="gradient"):
        robust_cross_entropy(f, r, y, gradient="hand")  # type: ignore[arg-type]
