"""Datasets for the common layouts, the domain-pair data modules (classification, segmentation) and the embedded
digits benchmarks."""

from syn2real.data.datamodule import DigitsDataModule, DomainPairDataModule, DomainSpec
from syn2real.data.segmentation import DigitsSegmentationDataModule, SegDomainSpec, SegmentationDataModule
from syn2real.data.unpaired import UnpairedImageDataModule

__all__ = [
    "DigitsDataModule", "DigitsSegmentationDataModule", "DomainPairDataModule", "DomainSpec", "SegDomainSpec", "SegmentationDataModule",
    "UnpairedImageDataModule",
]
