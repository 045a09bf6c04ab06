"""Methods: one ``LightningModule`` per method, all subclasses of :class:`DAMethod`."""

from syn2real.methods.adda import ADDA
from syn2real.methods.asg import ASG
from syn2real.methods.base import DAMethod, OptimConfig
from syn2real.methods.csg import CSG
from syn2real.methods.cycada import CyCADA
from syn2real.methods.dann import CDAN, DANN
from syn2real.methods.self_training import SelfTraining
from syn2real.methods.source_only import SourceOnly

__all__ = ["ADDA", "ASG", "CDAN", "CSG", "CyCADA", "DANN", "DAMethod", "OptimConfig", "SelfTraining", "SourceOnly"]
