"""Feature-level adversarial adaptation with a gradient reversal layer: DANN and CDAN(+E).

One optimizer trains the task network and the discriminator together; the gradient reversal layer makes the
features *maximise* the domain loss the discriminator minimises (Ganin & Lempitsky, ICML 2015). CDAN (Long et
al., NeurIPS 2018) conditions the discriminator on the classifier's predictions (f ⊗ softmax) and weights
samples by their prediction certainty.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from syn2real.adversarial.base import Augmentation
from syn2real.losses.adversarial import (
    RandomizedMultilinear,
    cdan_conditioning,
    cdan_loss,
    domain_accuracy,
    domain_adversarial_loss,
    entropy_weights,
    grad_reverse,
    grl_lambda,
)
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.models.discriminators import DiscriminatorConfig
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Task

__all__ = ["CDAN", "DANN"]


def dann_optim() -> OptimConfig:
    """DANN's optimiser: SGD momentum 0.9, μ_p = μ₀ (1 + 10 p)^−0.75, μ₀ = 0.01."""
    return OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3, scheduler="inv", gamma=10.0,
                       inv_power=0.75)


@null_defaults(
    task=lambda: Classification(NetworkConfig()), optim=dann_optim, discriminator=lambda: DiscriminatorConfig(preset="dann"))
class DANN(DAMethod):
    """Domain-adversarial training (Ganin & Lempitsky 2015; JMLR 2016).

    Loss = CE(source) + ``adv_weight`` · BCE(D(GRL_λ(f)), domain) with source = 1, target = 0, both domains in one
    forward pass (shared BatchNorm statistics, as in the reference implementations).

    Args:
        task / optim / augment: as for every method; ``optim`` defaults to the paper's SGD + ``inv`` schedule.
        discriminator: MLP on the features; default the paper's 1024-1024-1 with dropout 0.5.
        adv_weight: trade-off of the domain loss (1 in the paper).
        grl_schedule: ``dann`` (λ_p = 2/(1+exp(−γ p)) − 1 over training progress p, the paper) or ``constant``
            (λ = 1).
        grl_gamma: γ of the schedule (10).
        adv_warmup_steps: source-only steps before the adversarial term is switched on (0 = paper); p is then
            measured from the end of the warm-up.
    """

    supported_tasks = (Classification,)  # losses on image-level features/predictions

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        discriminator: DiscriminatorConfig | None = None,
        adv_weight: float = 1.0,
        grl_schedule: Literal["dann", "constant"] = "dann",
        grl_gamma: float = 10.0,
        adv_warmup_steps: int = 0,
    ) -> None:
        super().__init__(task=task, optim=optim or dann_optim(), augment=augment)
        if grl_schedule not in ("dann", "constant"):
            raise ValueError(f"grl_schedule must be 'dann' or 'constant', got {grl_schedule!r}")
        if adv_weight < 0 or adv_warmup_steps < 0:
            raise ValueError(f"adv_weight and adv_warmup_steps must be >= 0, got {adv_weight}, {adv_warmup_steps}")
        self.disc_cfg = discriminator or DiscriminatorConfig(preset="dann")
        self.adv_weight = float(adv_weight)
        self.grl_schedule = grl_schedule
        self.grl_gamma = float(grl_gamma)
        self.adv_warmup_steps = int(adv_warmup_steps)
        self.discriminator = self.disc_cfg.build(self.discriminator_in_features())

    # -- hooks CDAN overrides ---------------------------------------------------------------------
    def discriminator_in_features(self) -> int:
        return self.model.num_features

    def domain_inputs(
        self, features: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the discriminator sees for each sample, and an optional per-sample weight."""
        return features, None

    def domain_loss(
        self, d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor | None, w_t: torch.Tensor | None
    ) -> torch.Tensor:
        return domain_adversarial_loss(d_s, d_t)

    # -- schedule ---------------------------------------------------------------------------------
    def grl_coefficient(self, step: int | None = None, total_steps: int | None = None) -> float:
        """λ at ``step`` of ``total_steps`` (default: the trainer's), 0 during the warm-up."""
        step = self.global_step if step is None else step
        if step < self.adv_warmup_steps:
            return 0.0
        if self.grl_schedule == "constant":
            return 1.0
        total = (self._total_steps() if total_steps is None else total_steps) - self.adv_warmup_steps
        return grl_lambda((step - self.adv_warmup_steps) / max(1, total), self.grl_gamma)

    def _total_steps(self) -> int:
        if self._trainer is None:
            return 1
        return max(1, int(self.trainer.estimated_stepping_batches))

    # -- training ---------------------------------------------------------------------------------
    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x_s, y_s = self.source_batch(batch)
        x_t = batch["target"][0]
        logits, features = self.model(torch.cat([x_s, x_t]), return_features=True)
        n_s = x_s.shape[0]
        ce = F.cross_entropy(logits[:n_s], y_s)
        coeff = self.grl_coefficient()
        inputs, weights = self.domain_inputs(features, logits)
        d_out = self.discriminator(grad_reverse(inputs, coeff))
        w_s, w_t = (None, None) if weights is None else (weights[:n_s], weights[n_s:])
        adv = self.domain_loss(d_out[:n_s], d_out[n_s:], w_s, w_t)
        loss = ce + self.adv_weight * adv
        return {
            "loss": loss,
            "source_ce": ce,
            "domain_loss": adv,
            "domain_acc": domain_accuracy(d_out[:n_s], d_out[n_s:]),
            "grl_lambda": torch.tensor(coeff),
            "source_acc": (logits[:n_s].argmax(1) == y_s).float().mean().detach(),
        }

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        lr = self.optim_cfg.lr * self.disc_cfg.lr_mult
        groups.append({"params": list(self.discriminator.parameters()), "lr": lr, "name": "discriminator"})
        return groups


def cdan_optim() -> OptimConfig:
    """CDAN's optimiser (thuml/CDAN, TLlib): SGD lr 0.01, momentum 0.9, nesterov, wd 1e-3, inv schedule."""
    return OptimConfig(name="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3, scheduler="inv",
                       gamma=10.0, inv_power=0.75)


@null_defaults(
    task=lambda: Classification(NetworkConfig()), optim=cdan_optim, discriminator=lambda: DiscriminatorConfig(preset="dann"))
class CDAN(DANN):
    """Conditional domain-adversarial network (Long et al., NeurIPS 2018).

    The discriminator sees the multilinear map f ⊗ g of features and (detached) softmax predictions, or a
    randomized multilinear map of ``random_dim`` dimensions when F·C exceeds ``max_multilinear_dim`` (4096, with
    d = 1024, as in the paper). With ``entropy_conditioning`` (CDAN+E, default) each sample's domain loss is
    weighted by 1 + exp(−H(g)), normalised within each domain.
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        discriminator: DiscriminatorConfig | None = None,
        adv_weight: float = 1.0,
        grl_schedule: Literal["dann", "constant"] = "dann",
        grl_gamma: float = 10.0,
        adv_warmup_steps: int = 0,
        entropy_conditioning: bool = True,
        random_dim: int = 1024,
        max_multilinear_dim: int = 4096,
        random_seed: int = 0,
    ) -> None:
        # set before DANN builds the discriminator, whose input size depends on them
        self._random_dim, self._max_dim = int(random_dim), int(max_multilinear_dim)
        super().__init__(
            task=task, optim=optim or cdan_optim(), augment=augment, discriminator=discriminator,
            adv_weight=adv_weight, grl_schedule=grl_schedule, grl_gamma=grl_gamma, adv_warmup_steps=adv_warmup_steps,
        )
        self.entropy_conditioning = bool(entropy_conditioning)
        f, c = self.model.num_features, self.network_cfg.num_classes
        self.multilinear = (
            RandomizedMultilinear(f, c, self._random_dim, seed=random_seed) if f * c > self._max_dim else None
        )

    def discriminator_in_features(self) -> int:
        full = self.model.num_features * self.network_cfg.num_classes
        return self._random_dim if full > self._max_dim else full

    def domain_inputs(
        self, features: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        probs = logits.float().softmax(dim=1).detach()
        if self.multilinear is not None:
            h = self.multilinear(features, probs)
        else:
            h = cdan_conditioning(features, probs)
        return h, entropy_weights(probs) if self.entropy_conditioning else None

    def domain_loss(
        self, d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor | None, w_t: torch.Tensor | None
    ) -> torch.Tensor:
        return cdan_loss(d_s, d_t, w_s, w_t)
