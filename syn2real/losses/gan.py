"""Pixel-level adaptation losses of CyCADA (Hoffman et al., ICML 2018) on top of CycleGAN (Zhu et al., ICCV 2017).

- LSGAN (Mao et al. 2017): the discriminator minimises ½[(D(real) − 1)² + D(fake)²], the generator minimises
  (D(fake) − 1)², so the generator's term weighs twice the discriminator's, as in the CycleGAN/CyCADA code.
- Cycle consistency: λ_cyc (‖G_TS(G_ST(x_s)) − x_s‖₁ + ‖G_ST(G_TS(x_t)) − x_t‖₁), λ_cyc = 1 in CyCADA.
- Identity (optional): ‖G_ST(x_t) − x_t‖₁ + ‖G_TS(x_s) − x_s‖₁.
- Semantic consistency with a frozen source model f_S: CE(f_S(G_ST(x_s)), y_s) + CE(f_S(G_TS(x_t)), argmax f_S(x_t)).
- Task loss on translated source: CE(f_T(G_ST(x_s)), y_s) (:func:`~syn2real.core.cross_entropy.task_cross_entropy`).
- Relativistic LSGAN (Jolicoeur-Martineau 2019, EnlightenGAN's global discriminator): the discriminator minimises
  ½[(D(real) − E D(fake) − 1)² + (D(fake) − E D(real))²], the generator the same with real and fake swapped.

Every cross-entropy here accepts classification logits (B, C) with labels (B,) and segmentation logits
(B, C, H, W) with label maps (B, H, W), where ``ignore_index`` (255) marks unlabelled pixels. All functions are
pure: they return new tensors and never modify their inputs. They compute in float32 whatever the input dtype
(bf16/fp16 under ``--trainer.precision bf16-mixed|16-mixed``), so squares and logs neither overflow nor lose precision;
gradients flow back to the half-precision inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.core.labels import IGNORE_INDEX

__all__ = [
    "cycle_loss",
    "identity_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "label_flip_rate",
    "relativistic_lsgan_discriminator_loss",
    "relativistic_lsgan_generator_loss",
    "semantic_consistency_loss",
    "teacher_labels",
]

def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """½ [mean (D(real) − 1)² + mean D(fake)²] over every patch logit."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """mean (D(G(x)) − 1)²: the generator wants its images scored as real."""
    d_fake = d_fake.float()
    return F.mse_loss(d_fake, torch.ones_like(d_fake))


def cycle_loss(
    x_s: torch.Tensor, rec_s: torch.Tensor, x_t: torch.Tensor, rec_t: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """λ_cyc (mean |rec_s − x_s| + mean |rec_t − x_t|)."""
    return weight * (F.l1_loss(rec_s.float(), x_s.float()) + F.l1_loss(rec_t.float(), x_t.float()))


def identity_loss(
    x_s: torch.Tensor, idt_s: torch.Tensor, x_t: torch.Tensor, idt_t: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """weight (mean |G_TS(x_s) − x_s| + mean |G_ST(x_t) − x_t|): ``idt_s = G_TS(x_s)``, ``idt_t = G_ST(x_t)``."""
    return weight * (F.l1_loss(idt_s.float(), x_s.float()) + F.l1_loss(idt_t.float(), x_t.float()))


def teacher_labels(logits: torch.Tensor) -> torch.Tensor:
    """argmax of the teacher over classes: (B, C) -> (B,), (B, C, H, W) -> (B, H, W); never carries gradient."""
    return logits.detach().argmax(dim=1)


def semantic_consistency_loss(
    teacher_on_fake_t: torch.Tensor,
    y_s: torch.Tensor,
    teacher_on_fake_s: torch.Tensor,
    teacher_on_x_t: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """CE(f_S(G_ST(x_s)), y_s) + CE(f_S(G_TS(x_t)), argmax f_S(x_t)).

    ``teacher_on_fake_t`` = f_S(G_ST(x_s)) and ``teacher_on_fake_s`` = f_S(G_TS(x_t)) carry gradient to the
    generators (the teacher's weights are frozen); ``teacher_on_x_t`` only supplies the target's labels."""
    return task_cross_entropy(teacher_on_fake_t, y_s, ignore_index) + task_cross_entropy(
        teacher_on_fake_s, teacher_labels(teacher_on_x_t), ignore_index
    )


def label_flip_rate(logits_before: torch.Tensor, logits_after: torch.Tensor) -> torch.Tensor:
    """Fraction of samples (or pixels) whose argmax class differs before and after translation."""
    return (logits_before.argmax(dim=1) != logits_after.argmax(dim=1)).float().mean()


def relativistic_lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """½ [mean (D(real) − mean D(fake) − 1)² + mean (D(fake) − mean D(real))²]: real images must look more real than
    the average fake, fakes no more real than the average real image (EnlightenGAN eq. 1–2)."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return 0.5 * (
        F.mse_loss(d_real - d_fake.mean(), torch.ones_like(d_real))
        + F.mse_loss(d_fake - d_real.mean(), torch.zeros_like(d_fake))
    )


def relativistic_lsgan_generator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """½ [mean (D(fake) − mean D(real) − 1)² + mean (D(real) − mean D(fake))²]: the discriminator's objective with
    the roles of real and fake swapped. ``d_real`` may be detached (only the fakes carry the generator's gradient)."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return 0.5 * (
        F.mse_loss(d_fake - d_real.mean(), torch.ones_like(d_fake))
        + F.mse_loss(d_real - d_fake.mean(), torch.zeros_like(d_real))
    )
