"""Deep ensembles and MC dropout as predictors: averaging by hand, disagreement, stochastic passes, the refusal of a
network without dropout, and the evaluation callback that swaps the predictor in and out."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from syn2real.models.ensemble import EnsembleClassifier, MCDropout, dropout_layers, member_disagreement
from syn2real.models.heads import NetworkConfig, build_classifier


def linear(weight: list[list[float]]) -> nn.Linear:
    w = torch.tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def test_ensemble_averages_softmax_by_hand() -> None:
    a = linear([[1.0, 0.0], [0.0, 1.0]])  # logits = x
    b = linear([[0.0, 2.0], [0.0, 0.0]])  # logits = (2 x1, 0)
    x = torch.tensor([[math.log(3.0), 0.0]])
    # member a: softmax(ln 3, 0) = (3/4, 1/4); member b: softmax(0, 0) = (1/2, 1/2); mean = (5/8, 3/8)
    ensemble = EnsembleClassifier([a, b])
    out = ensemble(x)
    assert torch.allclose(out.softmax(1), torch.tensor([[5 / 8, 3 / 8]]), atol=1e-6)
    assert torch.allclose(out.exp(), torch.tensor([[5 / 8, 3 / 8]]), atol=1e-6)  # log of the mean itself
    # disagreement = mean KL of the members to the mean, by hand
    kl_a = 0.75 * math.log(0.75 / (5 / 8)) + 0.25 * math.log(0.25 / (3 / 8))
    kl_b = 0.5 * math.log(0.5 / (5 / 8)) + 0.5 * math.log(0.5 / (3 / 8))
    assert ensemble.last_disagreement.item() == pytest.approx((kl_a + kl_b) / 2, rel=1e-5)
    # ... which is H(mean) - mean of H(members) (the mutual information)
    h = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    assert ensemble.last_disagreement.item() == pytest.approx(h([5 / 8, 3 / 8]) - (h([.75, .25]) + h([.5, .5])) / 2,
                                                              rel=1e-5)


def test_identical_members_do_not_disagree_and_gradients_flow() -> None:
    a = linear([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])
    ensemble = EnsembleClassifier([a, a])
    x = torch.randn(4, 2, requires_grad=True)
    out = ensemble(x)
    assert torch.allclose(out, a(x).log_softmax(1), atol=1e-6)
    assert torch.allclose(ensemble.last_disagreement, torch.zeros(4), atol=1e-6)
    out[:, 0].sum().backward()  # attacks differentiate through the averaged predictor
    assert x.grad is not None and x.grad.abs().sum() > 0
    # pixel maps (B, C, H, W): the class dimension is 1
    maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    assert member_disagreement(maps).shape == (2, 4, 4)


def test_mc_dropout_passes_differ_and_their_average_is_returned() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4)).eval()
    x = torch.randn(3, 6)
    mc = MCDropout(net, passes=5).eval()
    torch.manual_seed(123)
    out = mc(x)
    assert not net[2].training  # dropout back in eval mode after the passes
    # the same passes by hand: dropout on, 5 draws from the same seed
    torch.manual_seed(123)
    net[2].train()
    passes = [net(x) for _ in range(5)]
    net[2].eval()
    assert not torch.allclose(passes[0], passes[1])  # the passes differ
    expected = torch.stack([p.softmax(1) for p in passes]).mean(0)
    assert torch.allclose(out.exp(), expected, atol=1e-6)
    assert torch.allclose(mc.last_disagreement, member_disagreement(passes), atol=1e-6)
    assert (mc.last_disagreement > 0).all()
    # evaluation without MC dropout stays deterministic
    assert torch.equal(net(x), net(x))


def test_mc_dropout_refuses_a_network_without_dropout() -> None:
    default = build_classifier(NetworkConfig())  # dropout 0.0: today's network
    assert dropout_layers(default) == []
    with pytest.raises(ValueError, match="network.dropout"):
        MCDropout(default, passes=4)
    with_dropout = build_classifier(NetworkConfig(dropout=0.25))
    assert len(dropout_layers(with_dropout)) == 1
    out = MCDropout(with_dropout.eval(), passes=3)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="passes"):
        MCDropout(with_dropout, passes=0)


def test_default_network_is_unchanged_by_the_dropout_option() -> None:
    torch.manual_seed(0)
    a = build_classifier(NetworkConfig())
    torch.manual_seed(0)
    b = build_classifier(NetworkConfig(dropout=0.0))
    x = torch.randn(2, 1, 28, 28)
    a.train(), b.train()
    assert a.state_dict().keys() == b.state_dict().keys()
    assert torch.equal(a(x), b(x))
