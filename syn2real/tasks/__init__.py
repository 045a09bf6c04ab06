"""Tasks injected into methods (``model.init_args.task``): what the network predicts, its loss, metrics, validators,
evaluation step and pictures. A method is written once for all of them."""

from syn2real.tasks.base import Task
from syn2real.tasks.classification import Classification
from syn2real.tasks.segmentation import Segmentation

__all__ = ["Classification", "Segmentation", "Task"]
