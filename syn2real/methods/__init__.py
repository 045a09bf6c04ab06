"""Methods: one ``LightningModule`` per method; the adaptation methods subclass :class:`DAMethod`, the image
enhancement GAN (:class:`EnlightenGAN`) is a LightningModule of its own."""

from syn2real.methods.adda import ADDA
from syn2real.methods.asg import ASG
from syn2real.methods.base import DAMethod, OptimConfig
from syn2real.methods.csg import CSG
from syn2real.methods.cycada import CyCADA
from syn2real.methods.dann import CDAN, DANN
from syn2real.methods.enlightengan import EnlightenGAN
from syn2real.methods.segmentation import OutputSpaceAdaptation, SegCyCADA, SegSelfTraining, SegSourceOnly
from syn2real.methods.self_training import SelfTraining
from syn2real.methods.source_only import SourceOnly

__all__ = [
    "ADDA", "ASG", "CDAN", "CSG", "CyCADA", "DANN", "DAMethod", "EnlightenGAN", "OptimConfig", "OutputSpaceAdaptation",
    "SegCyCADA", "SegSelfTraining", "SegSourceOnly", "SelfTraining", "SourceOnly",
]
