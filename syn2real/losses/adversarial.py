"""Adversarial domain-alignment losses: DANN (GRL + domain BCE), ADDA (GAN losses) and CDAN (conditioning).

Domain-label convention used everywhere in this module: **source = 1, target = 0**. A discriminator either
outputs one logit per sample, shape (B,) or (B, 1) (BCE with logits, the logit is "source vs target"), or two
logits, shape (B, 2) (cross-entropy, class 1 = source, class 0 = target; the CyCADA digits discriminator
10→500→500→2 is of this kind). Trailing spatial dimensions, (B, 1, H, W) or (B, 2, H, W), are accepted for
output-space discriminators; a sample's loss is then the mean over its positions.

All functions are pure: they return new tensors and never modify their inputs. Domain losses are computed in float32
whatever the input dtype (bf16/fp16 logits under mixed precision); entropies keep float32 and float64 inputs' precision
(the validators sum them in float64) and compute half-precision inputs in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GradientReversal",
    "GradientReversalFunction",
    "RandomizedMultilinear",
    "adda_discriminator_loss",
    "adda_target_loss",
    "cdan_conditioning",
    "cdan_loss",
    "domain_accuracy",
    "domain_adversarial_loss",
    "entropy",
    "entropy_weights",
    "grad_reverse",
    "grl_lambda",
]

SOURCE_LABEL = 1
TARGET_LABEL = 0


# --------------------------------------------------------------------------------------------------------------
# Gradient reversal (DANN)
# --------------------------------------------------------------------------------------------------------------


def grl_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN schedule λ_p = 2 / (1 + exp(−γ·p)) − 1 (Ganin & Lempitsky, ICML 2015), p clamped to [0, 1].

    Rises from 0 at p = 0 to 2/(1+e^−γ) − 1 ≈ 0.99991 at p = 1 for the paper's γ = 10.
    """
    p = float(progress)
    if math.isnan(p):
        raise ValueError("grl_lambda: progress is NaN; expected a training progress in [0, 1]")
    g = float(gamma)
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"grl_lambda: gamma must be a finite positive number, got {gamma!r}")
    p = min(max(p, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-g * p)) - 1.0


class GradientReversalFunction(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by −coeff in the backward pass."""

    @staticmethod
    def forward(x: torch.Tensor, coeff: float) -> torch.Tensor:  # type: ignore[override]
        # A view, not ``x`` itself: autograd must see a new output to attach this node's backward to.
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        _, coeff = inputs
        ctx.coeff = coeff

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad_output * (-ctx.coeff), None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Gradient reversal layer R_λ of DANN (Ganin & Lempitsky, ICML 2015): R(x) = x, dR/dx = −coeff·I.
    Any shape in, same shape out."""
    c = float(coeff)
    if not math.isfinite(c):
        raise ValueError(f"grad_reverse: coeff must be finite, got {coeff!r}")
    return GradientReversalFunction.apply(x, c)


class GradientReversal(nn.Module):
    """``nn.Module`` form of :func:`grad_reverse`; set ``module.coeff`` each step (e.g. to ``grl_lambda(p)``)."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


# --------------------------------------------------------------------------------------------------------------
# Domain classification losses (DANN, ADDA)
# --------------------------------------------------------------------------------------------------------------


def _logit_kind(logits: torch.Tensor, name: str) -> str:
    """'single' for (B,), (B, 1, ...); 'pair' for (B, 2, ...); a clear error otherwise."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(logits).__name__}")
    shape = tuple(logits.shape)
    if logits.ndim == 0 or shape[0] == 0:
        raise ValueError(
            f"{name}: expected discriminator logits of shape (B,), (B, 1) or (B, 2) with B >= 1, got {shape}"
        )
    if logits.ndim == 1 or shape[1] == 1:
        return "single"
    if shape[1] == 2:
        return "pair"
    raise ValueError(
        f"{name}: expected discriminator logits of shape (B,), (B, 1) or (B, 2) (optionally followed by spatial "
        f"dims), got {shape}"
    )


def _per_sample_domain_loss(logits: torch.Tensor, label: int, kind: str) -> torch.Tensor:
    """Loss of labelling every sample of ``logits`` with domain ``label``; shape (B,), spatial dims averaged."""
    logits = logits.float()
    if kind == "single":
        flat = logits.reshape(logits.shape[0], -1)
        target = torch.full_like(flat, float(label))
        return F.binary_cross_entropy_with_logits(flat, target, reduction="none").mean(dim=1)
    target = torch.full((logits.shape[0], *logits.shape[2:]), label, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="none").reshape(logits.shape[0], -1).mean(dim=1)


def _pair_kind(d_source_logits: torch.Tensor, d_target_logits: torch.Tensor) -> str:
    kind_s = _logit_kind(d_source_logits, "d_source_logits")
    kind_t = _logit_kind(d_target_logits, "d_target_logits")
    if kind_s != kind_t:
        raise ValueError(
            "d_source_logits and d_target_logits must both be single-logit (B,)/(B, 1) or both two-logit (B, 2), "
            f"got {tuple(d_source_logits.shape)} and {tuple(d_target_logits.shape)}"
        )
    return kind_s


def domain_adversarial_loss(d_source_logits: torch.Tensor, d_target_logits: torch.Tensor) -> torch.Tensor:
    """DANN domain loss (Ganin & Lempitsky, ICML 2015): BCE with source = 1, target = 0, averaged over the
    B_s + B_t samples of both domains together. Logits (B_s,)/(B_s, 1)/(B_s, 2), same form for target -> ()."""
    kind = _pair_kind(d_source_logits, d_target_logits)
    # Mean over the concatenation: with B_s != B_t each *sample* weighs the same (not each domain).
    losses = torch.cat(
        [
            _per_sample_domain_loss(d_source_logits, SOURCE_LABEL, kind),
            _per_sample_domain_loss(d_target_logits, TARGET_LABEL, kind),
        ]
    )
    return losses.mean()


def domain_accuracy(d_source_logits: torch.Tensor, d_target_logits: torch.Tensor) -> torch.Tensor:
    """Fraction in [0, 1] of the B_s + B_t samples whose domain the discriminator gets right (logit > 0, or
    class 1 of two logits, means "source"); spatial maps count every position. Returns a detached () tensor."""
    kind = _pair_kind(d_source_logits, d_target_logits)
    with torch.no_grad():
        if kind == "single":
            says_source_s = d_source_logits > 0
            says_source_t = d_target_logits > 0
        else:
            says_source_s = d_source_logits.argmax(dim=1) == SOURCE_LABEL
            says_source_t = d_target_logits.argmax(dim=1) == SOURCE_LABEL
        correct = says_source_s.sum() + (~says_source_t).sum()
        total = says_source_s.numel() + says_source_t.numel()
        return correct.to(torch.float32) / total


def adda_discriminator_loss(d_source_logits: torch.Tensor, d_target_logits: torch.Tensor) -> torch.Tensor:
    """ADDA discriminator loss L_adv_D (Tzeng et al., CVPR 2017): GAN BCE with source encodings = 1 and target
    encodings = 0, mean over all B_s + B_t samples (same value as :func:`domain_adversarial_loss`). Returns ()."""
    return domain_adversarial_loss(d_source_logits, d_target_logits)


def adda_target_loss(d_target_logits: torch.Tensor) -> torch.Tensor:
    """ADDA target-encoder loss L_adv_M (Tzeng et al., CVPR 2017): inverted-label GAN loss, target encodings
    labelled as source (BCE with label 1, or CE with class 1 for (B, 2) logits), mean over B_t. Returns ()."""
    kind = _logit_kind(d_target_logits, "d_target_logits")
    return _per_sample_domain_loss(d_target_logits, SOURCE_LABEL, kind).mean()


# --------------------------------------------------------------------------------------------------------------
# CDAN (Long et al. 2018)
# --------------------------------------------------------------------------------------------------------------


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy H(p) = −Σ_c p_c log p_c over dim 1 (natural log, 0·log 0 = 0), as in CDAN+E:
    (N, C[, ...]) -> (N[, ...]); float64 in -> float64 out; float32 and half precision (computed in float32) -> float32.
    """
    if probs.ndim < 2:
        raise ValueError(f"entropy: probs must have shape (N, C) or (N, C, ...), got {tuple(probs.shape)}")
    if probs.dtype not in (torch.float32, torch.float64):  # fp16/bf16 (log of small p underflows) and integers
        probs = probs.float()
    # Clamping inside the log keeps 0·log 0 = 0 and a finite gradient at p = 0.
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(dim=1)


def entropy_weights(probs: torch.Tensor) -> torch.Tensor:
    """CDAN+E entropy-conditioning weights w = 1 + exp(−H(p)) (Long et al., NeurIPS 2018):
    (B, C) -> (B,), values in [1 + 1/C, 2]."""
    if probs.ndim != 2:
        raise ValueError(f"entropy_weights: probs must have shape (B, C), got {tuple(probs.shape)}")
    return 1.0 + torch.exp(-entropy(probs))


def _check_features_probs(features: torch.Tensor, probs: torch.Tensor) -> None:
    if features.ndim != 2:
        raise ValueError(f"cdan_conditioning: features must have shape (B, F), got {tuple(features.shape)}")
    if probs.ndim != 2 or probs.shape[0] != features.shape[0]:
        raise ValueError(
            f"cdan_conditioning: probs must have shape (B, C) with B = {features.shape[0]} (from features), "
            f"got {tuple(probs.shape)}"
        )


def cdan_conditioning(
    features: torch.Tensor,
    probs: torch.Tensor,
    random_dim: int | None = None,
    random_matrices: tuple[torch.Tensor, torch.Tensor] | None = None,
    detach_probs: bool = True,
) -> torch.Tensor:
    """CDAN discriminator input (Long et al., NeurIPS 2018): multilinear map f ⊗ g, (B, F), (B, C) -> (B, F·C) with
    out[b, i·C + c] = f[b, i]·g[b, c]; or, given ``random_matrices`` (R_f (F, d), R_g (C, d)), the randomized map
    (f R_f) ⊙ (g R_g) / sqrt(d) -> (B, d).

    ``random_dim`` (d) needs matching ``random_matrices`` (see :class:`RandomizedMultilinear`, which holds them).
    ``detach_probs``: both reference implementations (thuml/CDAN, TLlib) feed the discriminator detached softmax
    outputs, so no adversarial gradient reaches the classifier through g; pass False to let it through.
    """
    _check_features_probs(features, probs)
    g = probs.detach() if detach_probs else probs
    if random_matrices is None:
        if random_dim is not None:
            raise ValueError(
                "cdan_conditioning: random_dim was given without random_matrices; use RandomizedMultilinear "
                "(fixed, seeded matrices) or pass random_matrices=(R_f of shape (F, d), R_g of shape (C, d))"
            )
        return (features.unsqueeze(2) * g.unsqueeze(1)).reshape(features.shape[0], -1)

    r_f, r_g = random_matrices
    d = r_f.shape[-1] if r_f.ndim == 2 else -1
    if r_f.shape != (features.shape[1], d):
        raise ValueError(
            f"cdan_conditioning: random_matrices[0] must have shape (F, d) = ({features.shape[1]}, d), "
            f"got {tuple(r_f.shape)}"
        )
    if r_g.shape != (probs.shape[1], d):
        raise ValueError(
            f"cdan_conditioning: random_matrices[1] must have shape (C, d) = ({probs.shape[1]}, {d}), "
            f"got {tuple(r_g.shape)}"
        )
    if random_dim is not None and int(random_dim) != d:
        raise ValueError(f"cdan_conditioning: random_dim={random_dim} but random_matrices have d = {d}")
    f_proj = features @ r_f.to(features.dtype)
    g_proj = g @ r_g.to(g.dtype)
    return f_proj * g_proj / math.sqrt(d)


class RandomizedMultilinear(nn.Module):
    """Randomized multilinear map of CDAN with fixed Gaussian R_f (F, d), R_g (C, d) drawn from ``seed``.

    The matrices are non-trainable buffers saved in the state dict, so a resumed run uses the same map. CDAN and
    TLlib switch to this map when F·C > 4096, with d = 1024.
    """

    def __init__(self, features_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0):
        super().__init__()
        for arg, value in (("features_dim", features_dim), ("num_classes", num_classes), ("output_dim", output_dim)):
            if int(value) < 1:
                raise ValueError(f"RandomizedMultilinear: {arg} must be >= 1, got {value}")
        gen = torch.Generator().manual_seed(int(seed))
        self.features_dim, self.num_classes, self.output_dim = int(features_dim), int(num_classes), int(output_dim)
        self.register_buffer("r_f", torch.randn(self.features_dim, self.output_dim, generator=gen))
        self.register_buffer("r_g", torch.randn(self.num_classes, self.output_dim, generator=gen))

    def forward(self, features: torch.Tensor, probs: torch.Tensor, detach_probs: bool = True) -> torch.Tensor:
        """(B, F), (B, C) -> (B, d); see :func:`cdan_conditioning`."""
        return cdan_conditioning(features, probs, self.output_dim, (self.r_f, self.r_g), detach_probs=detach_probs)

    def extra_repr(self) -> str:
        return f"features_dim={self.features_dim}, num_classes={self.num_classes}, output_dim={self.output_dim}"


def _normalised_weights(w: torch.Tensor | None, n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    if w.shape != (n,):
        raise ValueError(f"cdan_loss: {name} must have shape ({n},) (one weight per sample), got {tuple(w.shape)}")
    w = w.detach().to(like.dtype)
    total = w.sum()
    if not bool(torch.isfinite(total)) or bool((w < 0).any()) or float(total) <= 0:
        raise ValueError(f"cdan_loss: {name} must be finite, non-negative and sum to > 0")
    return w / total


def cdan_loss(
    d_source_logits: torch.Tensor,
    d_target_logits: torch.Tensor,
    w_source: torch.Tensor | None = None,
    w_target: torch.Tensor | None = None,
) -> torch.Tensor:
    """CDAN(+E) domain loss (Long et al., NeurIPS 2018): ½ (Σ_i ŵ_s,i ℓ_s,i + Σ_j ŵ_t,j ℓ_t,j), ŵ = w / Σw within
    each domain, ℓ the per-sample domain BCE (source = 1, target = 0). Logits (B_s, ·), (B_t, ·); weights (B_s,),
    (B_t,); returns ().

    This is thuml/CDAN's reference normalisation (each domain's weights sum to 1, then divided by their total, 2):
    each domain contributes half whatever its batch size. Missing weights are uniform, so ``cdan_loss(s, t)`` is the
    mean of the two domains' mean losses (equal to :func:`domain_adversarial_loss` when B_s = B_t). TLlib instead
    normalises over the concatenated batch; the two agree when both domains have equal weight totals. Weights are
    treated as constants (detached), as in TLlib.
    """
    kind = _pair_kind(d_source_logits, d_target_logits)
    loss_s = _per_sample_domain_loss(d_source_logits, SOURCE_LABEL, kind)
    loss_t = _per_sample_domain_loss(d_target_logits, TARGET_LABEL, kind)
    ws = _normalised_weights(w_source, loss_s.shape[0], loss_s, "w_source")
    wt = _normalised_weights(w_target, loss_t.shape[0], loss_t, "w_target")
    return 0.5 * ((ws * loss_s).sum() + (wt * loss_t).sum())
