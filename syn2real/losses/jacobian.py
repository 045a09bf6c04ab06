"""Jacobian regularisation (Hoffman, Roberts & Yaida 2019): penalise the Frobenius norm of the input-output
Jacobian J = ∂z/∂x of each example, estimated with random projections.

For v uniform on the unit sphere of the output space (dimension D = C for classification logits),
E_v ‖vᵀJ‖² = ‖J‖_F² / D, so ‖J‖_F² ≈ D / n_proj · Σ_{k} ‖v_kᵀ J‖²; each projection costs one backward pass
(with ``create_graph=True`` so the penalty itself is differentiable). The regulariser is R = ½ ‖J‖_F² averaged
over the batch and the training loss is CE + λ_JR · R.
"""

from __future__ import annotations

import torch

__all__ = ["jacobian_frobenius_sq", "jacobian_regularizer"]


def jacobian_frobenius_sq(
    x: torch.Tensor,
    outputs: torch.Tensor,
    n_proj: int = 1,
    input_scale: torch.Tensor | float | None = None,
    create_graph: bool = True,
) -> torch.Tensor:
    """Per-example estimate of ‖∂outputs/∂x‖_F², shape (B,).

    ``x`` must require grad and ``outputs`` (B, ...) be computed from it. ``n_proj = -1`` computes the exact norm
    (one backward per output dimension, for tests and small models). ``input_scale`` multiplies the input
    gradient, e.g. ``1 / std`` to measure the Jacobian with respect to pixels when ``x`` is normalised."""
    if not x.requires_grad:
        raise ValueError("jacobian_frobenius_sq needs an input x with requires_grad=True that outputs depend on")
    b = outputs.shape[0]
    flat = outputs.reshape(b, -1)
    d = flat.shape[1]
    if n_proj == -1:
        vectors = [torch.nn.functional.one_hot(torch.full((b,), i, device=flat.device), d).to(flat.dtype) for i in range(d)]
        scale = 1.0
    elif n_proj >= 1:
        vectors = []
        for _ in range(n_proj):
            v = torch.randn_like(flat)
            vectors.append(v / v.norm(dim=1, keepdim=True).clamp_min(1e-12))
        scale = d / n_proj
    else:
        raise ValueError(f"n_proj must be >= 1 (or -1 for the exact norm), got {n_proj}")
    total = flat.new_zeros(b)
    for v in vectors:
        (grad,) = torch.autograd.grad(flat, x, grad_outputs=v, create_graph=create_graph, retain_graph=True)
        if input_scale is not None:
            grad = grad * input_scale
        total = total + grad.pow(2).reshape(b, -1).sum(dim=1)
    return scale * total


def jacobian_regularizer(
    x: torch.Tensor, outputs: torch.Tensor, n_proj: int = 1, input_scale: torch.Tensor | float | None = None
) -> torch.Tensor:
    """R = ½ · mean over the batch of ‖J‖_F² (random-projection estimate with ``n_proj`` projections)."""
    return 0.5 * jacobian_frobenius_sq(x, outputs, n_proj, input_scale).mean()
