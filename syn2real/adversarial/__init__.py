"""Adversarial and spatial examples used as training augmentations (see :class:`Augmentation`)."""

from syn2real.adversarial.advprop import (
    AdvProp,
    DualBatchNorm,
    bn_route,
    convert_dual_bn,
    export_main_bn,
)
from syn2real.adversarial.apgd import APGD, dlr_loss, worst_case_correct
from syn2real.adversarial.attacks import FGSM, PGD, FastFGSM
from syn2real.adversarial.augmix import AugMix
from syn2real.adversarial.base import Augmentation
from syn2real.adversarial.jacobian import JacobianReg
from syn2real.adversarial.randconv import RandConv, random_conv
from syn2real.adversarial.spatial import (
    RandomSpatial,
    WorstOfK,
    grid_attack,
    vote_predict,
)

__all__ = [
    "APGD",
    "FGSM",
    "PGD",
    "AdvProp",
    "AugMix",
    "Augmentation",
    "DualBatchNorm",
    "FastFGSM",
    "JacobianReg",
    "RandConv",
    "RandomSpatial",
    "WorstOfK",
    "bn_route",
    "convert_dual_bn",
    "dlr_loss",
    "export_main_bn",
    "grid_attack",
    "random_conv",
    "vote_predict",
    "worst_case_correct",
]
