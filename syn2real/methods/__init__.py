"""Methods: one ``LightningModule`` per method, all subclasses of :class:`DAMethod`."""

from syn2real.methods.base import DAMethod, OptimConfig
from syn2real.methods.source_only import SourceOnly

__all__ = ["DAMethod", "OptimConfig", "SourceOnly"]
