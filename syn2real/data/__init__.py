"""Datasets for the common layouts, the domain-pair data module and the embedded digits benchmark."""

from syn2real.data.datamodule import DigitsDataModule, DomainPairDataModule, DomainSpec
from syn2real.data.unpaired import UnpairedImageDataModule

__all__ = ["DigitsDataModule", "DomainPairDataModule", "DomainSpec", "UnpairedImageDataModule"]
