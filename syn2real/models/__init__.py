"""Networks built from config; every backbone through ``timm.create_model``."""

from syn2real.models.backbones import create_backbone
from syn2real.models.heads import ImageClassifier, NetworkConfig, build_classifier

__all__ = ["ImageClassifier", "NetworkConfig", "build_classifier", "create_backbone"]
