"""Methods: one ``LightningModule`` per method. The adaptation methods subclass :class:`DAMethod` and are given
their task (:mod:`syn2real.tasks`); the image enhancement GAN (:class:`EnlightenGAN`) shares the task-free
:class:`~syn2real.methods.module.Syn2RealModule`."""

from syn2real.methods.adda import ADDA
from syn2real.methods.asg import ASG
from syn2real.methods.base import DAMethod
from syn2real.methods.csg import CSG
from syn2real.methods.cycada import CyCADA
from syn2real.methods.dann import CDAN, DANN
from syn2real.methods.drst import DRST
from syn2real.methods.enlightengan import EnlightenGAN
from syn2real.methods.mean_teacher import MeanTeacher
from syn2real.methods.minent import MinEnt
from syn2real.methods.optim import OptimConfig
from syn2real.methods.segmentation import OutputSpaceAdaptation
from syn2real.methods.self_training import SelfTraining
from syn2real.methods.source_only import SourceOnly

__all__ = [
    "ADDA", "ASG", "CDAN", "CSG", "CyCADA", "DANN", "DAMethod", "DRST", "EnlightenGAN", "MeanTeacher", "MinEnt", "OptimConfig",
    "OutputSpaceAdaptation", "SelfTraining", "SourceOnly",
]
