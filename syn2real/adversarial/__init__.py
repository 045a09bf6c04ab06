"""Adversarial and spatial examples used as training augmentations (see :class:`Augmentation`)."""

from syn2real.adversarial.attacks import FGSM, PGD, FastFGSM
from syn2real.adversarial.base import Augmentation

__all__ = ["FGSM", "PGD", "Augmentation", "FastFGSM"]
