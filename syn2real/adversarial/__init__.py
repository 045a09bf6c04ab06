"""Adversarial and spatial examples used as training augmentations (see :class:`Augmentation`)."""

from syn2real.adversarial.attacks import FGSM, PGD, FastFGSM
from syn2real.adversarial.base import Augmentation
from syn2real.adversarial.spatial import (
    RandomSpatial,
    WorstOfK,
    grid_attack,
    vote_predict,
)

__all__ = ["FGSM", "PGD", "Augmentation", "FastFGSM", "RandomSpatial", "WorstOfK", "grid_attack", "vote_predict"]
