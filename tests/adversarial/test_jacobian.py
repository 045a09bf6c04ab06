"""Jacobian regularisation: the random-projection estimator against exact norms, gradients, the plug-in term."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from syn2real.adversarial import JacobianReg
from syn2real.losses.jacobian import jacobian_frobenius_sq, jacobian_regularizer
from syn2real.methods import SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig


def linear(d_in: int = 6, d_out: int = 4) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(d_in, d_out)


def test_exact_norm_of_a_linear_map_is_its_frobenius_norm() -> None:
    f = linear()
    x = torch.randn(5, 6, requires_grad=True)
    got = jacobian_frobenius_sq(x, f(x), n_proj=-1)
    assert torch.allclose(got, torch.full((5,), float(f.weight.detach().pow(2).sum())), atol=1e-5)
    # input scale s: J w.r.t. x/s is s·J, so the norm scales by s²
    assert torch.allclose(jacobian_frobenius_sq(x, f(x), n_proj=-1, input_scale=2.0), 4 * got, atol=1e-4)


def test_hand_value_of_a_two_by_two_map() -> None:
    f = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        f.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    x = torch.zeros(1, 2, requires_grad=True)
    # ||J||_F^2 = 1 + 4 + 9 + 16 = 30; R = 15
    assert jacobian_regularizer(x, f(x), n_proj=-1).item() == pytest.approx(15.0)


def test_random_projections_are_unbiased() -> None:
    f = linear()
    x = torch.randn(3, 6, requires_grad=True)
    exact = jacobian_frobenius_sq(x, f(x), n_proj=-1)
    torch.manual_seed(1)
    estimate = jacobian_frobenius_sq(x, f(x), n_proj=4000, create_graph=False)
    assert torch.allclose(estimate, exact, rtol=0.05)


def test_penalty_is_differentiable_in_the_weights() -> None:
    f = linear()
    x = torch.randn(3, 6, requires_grad=True)
    jacobian_regularizer(x, f(x), n_proj=-1).backward()  # R = ½‖W‖²  ⇒  ∂R/∂W = W
    assert torch.allclose(f.weight.grad, f.weight.detach(), atol=1e-5)


def test_needs_an_input_that_requires_grad() -> None:
    f = linear()
    x = torch.randn(3, 6)
    with pytest.raises(ValueError, match="requires_grad"):
        jacobian_frobenius_sq(x, f(x))


def test_plug_in_term_on_a_conv_net_and_a_method_step() -> None:
    torch.manual_seed(0)
    net = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)
    reg = JacobianReg(weight=0.1, n_proj=1, std=(0.5,))
    method = SourceOnly(task=Classification(network=net), augment=reg)
    x, y = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (4,))
    assert reg(method.model, x, y)[0] is x
    term = reg.auxiliary_losses(method.model, x, y)["jacobian"]
    assert term > 0 and term.requires_grad
    logged = {}
    method.log = lambda *a, **k: None  # type: ignore[method-assign]
    method.log_dict = lambda d, **k: logged.update(d)  # type: ignore[method-assign]
    loss = method.training_step({"source": (x, y), "target": (x, y, torch.arange(4))}, 0)
    assert torch.allclose(loss, logged["train/source_ce"] + logged["train/jacobian"], atol=1e-5)
    loss.backward()
    assert method.model.backbone.features[0][0].weight.grad.abs().sum() > 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        JacobianReg(weight=-1)
    with pytest.raises(ValueError):
        JacobianReg(n_proj=0)
    reg = JacobianReg(std=(0.5, 0.5))
    with pytest.raises(ValueError, match="channels"):
        reg.auxiliary_losses(linear(), torch.randn(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
