from __future__ import annotations

import itertools
import math

import pytest
import torch

from syn2real.losses.adversarial import (
    GradientReversal,
    RandomizedMultilinear,
    adda_discriminator_loss,
    adda_target_loss,
    cdan_conditioning,
    cdan_loss,
    domain_accuracy,
    domain_adversarial_loss,
    entropy,
    entropy_weights,
    grad_reverse,
    grl_lambda,
)

LOG2 = math.log(2.0)


def softplus(x: float) -> float:
    # BCE-with-logits: label 1 -> softplus(-z) = log(1 + e^-z); label 0 -> softplus(z) = log(1 + e^z).
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------------------------------------------- GRL schedule


def test_grl_lambda_endpoints_clamp_and_monotone() -> None:
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(1.0) == pytest.approx(2.0 / (1.0 + math.exp(-10.0)) - 1.0, abs=1e-15)
    # p = 0.5, γ = 10: 2 / (1 + e^-5) - 1 = 0.98661...
    assert grl_lambda(0.5) == pytest.approx(2.0 / (1.0 + math.exp(-5.0)) - 1.0)
    assert grl_lambda(-3.0) == 0.0 and grl_lambda(7.0) == grl_lambda(1.0)
    values = [grl_lambda(i / 100) for i in range(101)]
    assert all(a < b for a, b in itertools.pairwise(values))
    # smaller gamma -> slower ramp
    assert grl_lambda(0.1, gamma=1.0) < grl_lambda(0.1)
    with pytest.raises(ValueError, match="NaN"):
        grl_lambda(float("nan"))
    with pytest.raises(ValueError, match="gamma"):
        grl_lambda(0.5, gamma=0.0)


# ---------------------------------------------------------------------------------------------------- GRL


def test_grad_reverse_is_identity_forward_and_does_not_touch_input() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    before = x.detach().clone()
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    assert torch.equal(x.detach(), before)
    assert y is not x


@pytest.mark.parametrize("coeff", [1.0, 0.25, 0.0, -2.0])
def test_grad_reverse_gradient_is_minus_coeff_times_upstream(coeff: float) -> None:
    x = torch.randn(2, 5, requires_grad=True)
    upstream = torch.randn(2, 5)
    (grad,) = torch.autograd.grad(grad_reverse(x, coeff), x, grad_outputs=upstream)
    assert torch.allclose(grad, -coeff * upstream)


def test_grad_reverse_gradcheck_style_in_double() -> None:
    # h(GRL(x)) must have analytic gradient = -coeff x (finite-difference gradient of h, since GRL is the identity).
    torch.manual_seed(0)
    coeff = 0.7
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64)

    def h(v: torch.Tensor) -> torch.Tensor:
        return (torch.sin(v) * w).sum() + (v**2).sum()

    (analytic,) = torch.autograd.grad(h(grad_reverse(x, coeff)), x)
    eps = 1e-6
    numeric = torch.empty_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            e = torch.zeros_like(x)
            e[i] = eps
            numeric[i] = (h(x + e) - h(x - e)) / (2 * eps)
    assert torch.allclose(analytic, -coeff * numeric, atol=1e-8, rtol=1e-7)
    # With coeff = -1 the layer's gradient is +identity, so torch's own gradcheck/gradgradcheck must pass.
    assert torch.autograd.gradcheck(lambda v: grad_reverse(v, -1.0), (x,))
    assert torch.autograd.gradgradcheck(lambda v: h(grad_reverse(v, -1.0)), (x,))


def test_gradient_reversal_module_uses_settable_coeff() -> None:
    layer = GradientReversal()
    assert layer.coeff == 1.0
    layer.coeff = grl_lambda(0.5)
    x = torch.ones(4, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).sum(), x)
    assert torch.allclose(grad, torch.full((4,), -grl_lambda(0.5)))
    assert "coeff=" in repr(layer)


# ---------------------------------------------------------------------------------------------------- DANN / ADDA


def test_domain_loss_zero_logits_is_log2() -> None:
    # sigmoid(0) = 0.5 for every sample of either domain: BCE = -log 0.5 = log 2.
    assert domain_adversarial_loss(torch.zeros(3), torch.zeros(5)).item() == pytest.approx(LOG2)
    assert domain_adversarial_loss(torch.zeros(3, 1), torch.zeros(5, 1)).item() == pytest.approx(LOG2)
    # two equal logits: softmax (0.5, 0.5) -> CE = log 2 too.
    assert domain_adversarial_loss(torch.zeros(3, 2), torch.zeros(5, 2)).item() == pytest.approx(LOG2)


def test_domain_loss_hand_values_and_unequal_batches() -> None:
    s = torch.tensor([2.0])  # source label 1: softplus(-2) = log(1 + e^-2) = 0.126928
    t = torch.tensor([1.0, -1.0, 0.0])  # target label 0: softplus(1) = 1.313262, softplus(-1) = 0.313262, log 2
    losses = [softplus(-2.0), softplus(1.0), softplus(-1.0), LOG2]
    # mean over the concatenation of the 1 + 3 samples (NOT the mean of the two domain means)
    expected = sum(losses) / 4
    assert domain_adversarial_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    mean_of_means = 0.5 * (losses[0] + sum(losses[1:]) / 3)
    assert abs(expected - mean_of_means) > 1e-2
    # symmetry: swapping the roles flips the sign of every logit
    assert domain_adversarial_loss(-t, -s).item() == pytest.approx(expected, rel=1e-6)


def test_two_logit_outputs_use_class_one_as_source() -> None:
    # two logits (a, b): CE for class 1 = log(1 + e^(a - b)); (0, 2) as source -> log(1 + e^-2) = softplus(-2)
    s = torch.tensor([[0.0, 2.0]])
    t = torch.tensor([[0.0, 2.0]])  # target wants class 0 -> log(1 + e^2) = softplus(2)
    expected = (softplus(-2.0) + softplus(2.0)) / 2
    assert domain_adversarial_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    # a (B, 2) discriminator with logits (0, z) is equivalent to a single logit z
    z_s, z_t = torch.randn(4), torch.randn(6)

    def pair(z: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(z), z], dim=1)

    assert torch.allclose(domain_adversarial_loss(pair(z_s), pair(z_t)), domain_adversarial_loss(z_s, z_t), atol=1e-6)
    assert torch.allclose(adda_target_loss(pair(z_t)), adda_target_loss(z_t), atol=1e-6)


def test_adda_losses_hand_values() -> None:
    s = torch.tensor([[1.0], [3.0]])
    t = torch.tensor([[-1.0], [0.5]])
    # discriminator: source -> 1, target -> 0
    d_expected = (softplus(-1.0) + softplus(-3.0) + softplus(-1.0) + softplus(0.5)) / 4
    assert adda_discriminator_loss(s, t).item() == pytest.approx(d_expected, rel=1e-6)
    # target encoder, inverted labels: target -> 1: (softplus(1) + softplus(-0.5)) / 2
    g_expected = (softplus(1.0) + softplus(-0.5)) / 2
    assert adda_target_loss(t).item() == pytest.approx(g_expected, rel=1e-6)
    assert adda_target_loss(torch.zeros(7)).item() == pytest.approx(LOG2)


def test_domain_losses_accept_spatial_maps() -> None:
    # output-space discriminators: (B, 1, h, w); each sample's loss is the mean over its positions
    s = torch.zeros(2, 1, 3, 3)
    t = torch.zeros(1, 1, 5, 4)
    assert domain_adversarial_loss(s, t).item() == pytest.approx(LOG2)
    t2 = torch.full((2, 1, 3, 3), 2.0)
    assert adda_target_loss(t2).item() == pytest.approx(softplus(-2.0), rel=1e-6)
    assert adda_target_loss(torch.zeros(2, 2, 3, 3)).item() == pytest.approx(LOG2)


def test_domain_loss_shape_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"d_source_logits.*\(4, 3\)"):
        domain_adversarial_loss(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"must both be single-logit"):
        domain_adversarial_loss(torch.zeros(4), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"d_target_logits.*B >= 1"):
        adda_target_loss(torch.zeros(0, 1))


def test_losses_backpropagate_and_leave_inputs_alone() -> None:
    s = torch.randn(3, 1, requires_grad=True)
    t = torch.randn(4, 1, requires_grad=True)
    s0, t0 = s.detach().clone(), t.detach().clone()
    loss = domain_adversarial_loss(s, t) + adda_target_loss(t) + cdan_loss(s, t, torch.rand(3) + 0.1, None)
    loss.backward()
    assert s.grad is not None and t.grad is not None
    assert torch.equal(s.detach(), s0) and torch.equal(t.detach(), t0)


def test_domain_accuracy() -> None:
    s = torch.tensor([1.0, -1.0, 2.0])  # 2 of 3 called source
    t = torch.tensor([-3.0, 0.5])  # 1 of 2 called target
    assert domain_accuracy(s, t).item() == pytest.approx(3 / 5)
    s2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # argmax 1 = source -> 1 of 2
    t2 = torch.tensor([[2.0, 0.0]])  # argmax 0 = target -> 1 of 1
    assert domain_accuracy(s2, t2).item() == pytest.approx(2 / 3)
    assert not domain_accuracy(s.requires_grad_(), t).requires_grad


# ---------------------------------------------------------------------------------------------------- CDAN


def test_entropy_hand_values() -> None:
    # uniform over C -> log C; one-hot -> 0 (0 log 0 = 0, no NaN)
    assert entropy(torch.full((2, 4), 0.25)).tolist() == pytest.approx([math.log(4)] * 2)
    assert entropy(torch.tensor([[1.0, 0.0, 0.0]])).tolist() == [0.0]
    # [0.5, 0.25, 0.25]: 0.5 log 2 + 2 * 0.25 log 4 = 1.5 log 2
    assert entropy(torch.tensor([[0.5, 0.25, 0.25]])).item() == pytest.approx(1.5 * LOG2)
    # segmentation shape (N, C, H, W) -> (N, H, W)
    assert entropy(torch.full((2, 3, 4, 5), 1 / 3)).shape == (2, 4, 5)
    # finite gradient at a one-hot input
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    entropy(p).sum().backward()
    assert torch.isfinite(p.grad).all()


def test_entropy_keeps_float64_and_computes_half_precision_in_float32() -> None:
    # p = (1 − 1e-12, 1e-12): H = −(1 − 1e-12) log(1 − 1e-12) − 1e-12 log 1e-12 ≈ 1e-12 + 2.763e-11; in float32
    # 1 − 1e-12 rounds to 1 and the first term (3.5 % of H) is lost
    eps = 1e-12
    p = torch.tensor([[1 - eps, eps]], dtype=torch.float64)
    expected = -(1 - eps) * math.log1p(-eps) - eps * math.log(eps)
    h = entropy(p)
    assert h.dtype == torch.float64
    assert h.item() == pytest.approx(expected, rel=1e-12)
    for dtype in (torch.float16, torch.bfloat16):
        half = entropy(torch.tensor([[0.5, 0.25, 0.25]], dtype=dtype))
        assert half.dtype == torch.float32 and half.item() == pytest.approx(1.5 * LOG2, rel=1e-6)
    assert entropy(torch.full((1, 4), 0.25, dtype=torch.float32)).dtype == torch.float32


def test_entropy_weights_hand_values() -> None:
    # w = 1 + exp(-H): uniform over 4 -> 1 + 1/4; one-hot -> 2; [0.5, 0.25, 0.25] -> 1 + 2^-1.5
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    assert entropy_weights(p).tolist() == pytest.approx([1.25, 2.0])
    assert entropy_weights(torch.tensor([[0.5, 0.25, 0.25]])).item() == pytest.approx(1 + 2**-1.5)
    with pytest.raises(ValueError, match=r"probs must have shape \(B, C\), got \(3,\)"):
        entropy_weights(torch.ones(3))


def test_cdan_loss_normalises_weights_within_each_domain() -> None:
    s = torch.tensor([0.0, 2.0])  # source losses: log 2, softplus(-2)
    t = torch.tensor([1.0, 0.0, -1.0])  # target losses: softplus(1), log 2, softplus(-1)
    w_s = torch.tensor([1.0, 3.0])  # normalised: 0.25, 0.75
    w_t = torch.tensor([2.0, 1.0, 1.0])  # normalised: 0.5, 0.25, 0.25
    src = 0.25 * LOG2 + 0.75 * softplus(-2.0)
    tgt = 0.5 * softplus(1.0) + 0.25 * LOG2 + 0.25 * softplus(-1.0)
    assert cdan_loss(s, t, w_s, w_t).item() == pytest.approx(0.5 * (src + tgt), rel=1e-6)
    # weights are scale-free per domain
    assert cdan_loss(s, t, 10 * w_s, 0.1 * w_t).item() == pytest.approx(0.5 * (src + tgt), rel=1e-6)
    # no weights: the mean of the two domain means ...
    plain = 0.5 * ((LOG2 + softplus(-2.0)) / 2 + (softplus(1.0) + LOG2 + softplus(-1.0)) / 3)
    assert cdan_loss(s, t).item() == pytest.approx(plain, rel=1e-6)
    # ... which is DANN's loss when the batch sizes match
    s3 = torch.randn(3, 1)
    assert torch.allclose(cdan_loss(s3, t), domain_adversarial_loss(s3, t))


def test_cdan_loss_weights_are_constants_and_validated() -> None:
    s, t = torch.randn(2, 1, requires_grad=True), torch.randn(2, 1)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    cdan_loss(s, t, w, None).backward()
    assert w.grad is None and s.grad is not None
    with pytest.raises(ValueError, match=r"w_source must have shape \(2,\).*got \(3,\)"):
        cdan_loss(s, t, torch.ones(3))
    with pytest.raises(ValueError, match="w_target must be finite, non-negative"):
        cdan_loss(s, t, None, torch.tensor([-1.0, 0.5]))


def test_cdan_conditioning_outer_product() -> None:
    f = torch.tensor([[1.0, 2.0, 3.0]])
    g = torch.tensor([[0.25, 0.75]])
    # out[i*C + c] = f_i * g_c
    expected = torch.tensor([[0.25, 0.75, 0.5, 1.5, 0.75, 2.25]])
    assert torch.equal(cdan_conditioning(f, g), expected)
    out = cdan_conditioning(torch.randn(5, 7), torch.softmax(torch.randn(5, 3), 1))
    assert out.shape == (5, 21)
    with pytest.raises(ValueError, match=r"probs must have shape \(B, C\) with B = 5"):
        cdan_conditioning(torch.randn(5, 7), torch.rand(4, 3))
    with pytest.raises(ValueError, match="random_dim was given without random_matrices"):
        cdan_conditioning(torch.randn(5, 7), torch.rand(5, 3), random_dim=16)


def test_cdan_conditioning_detaches_probs_by_default() -> None:
    f = torch.randn(2, 3, requires_grad=True)
    logits = torch.randn(2, 4, requires_grad=True)
    cdan_conditioning(f, logits.softmax(1)).sum().backward()
    assert f.grad is not None and logits.grad is None
    cdan_conditioning(f, logits.softmax(1), detach_probs=False).sum().backward()
    assert logits.grad is not None


def test_randomized_multilinear_formula_seed_and_buffers() -> None:
    torch.manual_seed(0)
    f, g = torch.randn(4, 6), torch.softmax(torch.randn(4, 3), 1)
    rm = RandomizedMultilinear(6, 3, output_dim=16, seed=123)
    out = rm(f, g)
    assert out.shape == (4, 16)
    expected = (f @ rm.r_f) * (g @ rm.r_g) / 4.0  # sqrt(16) = 4
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(cdan_conditioning(f, g, 16, (rm.r_f, rm.r_g)), expected, atol=1e-6)
    # same seed -> same matrices regardless of the global RNG; different seed -> different ones
    torch.manual_seed(99)
    again = RandomizedMultilinear(6, 3, output_dim=16, seed=123)
    assert torch.equal(again.r_f, rm.r_f) and torch.equal(again.r_g, rm.r_g)
    assert not torch.equal(RandomizedMultilinear(6, 3, output_dim=16, seed=124).r_f, rm.r_f)
    # fixed: buffers in the state dict, not parameters
    assert list(rm.parameters()) == []
    assert set(rm.state_dict()) == {"r_f", "r_g"}
    with pytest.raises(ValueError, match=r"random_matrices\[0\] must have shape \(F, d\) = \(5, d\)"):
        rm(torch.randn(4, 5), g)
    with pytest.raises(ValueError, match="random_dim=8 but random_matrices have d = 16"):
        cdan_conditioning(f, g, 8, (rm.r_f, rm.r_g))
