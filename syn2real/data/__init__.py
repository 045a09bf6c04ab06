"""Datasets for the common layouts, the domain-pair data modules (classification, segmentation) and the embedded
digits benchmarks.

The data modules are imported on first use (``syn2real.data.DigitsDataModule``), so a light submodule such as
:mod:`syn2real.data.prep_cli` loads without torch and lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syn2real.data.datamodule import (
        BaseDataModule,
        DigitsDataModule,
        DomainPairDataModule,
        DomainSpec,
        LoaderConfig,
    )
    from syn2real.data.rare_class import RareClassSampling
    from syn2real.data.segmentation import DigitsSegmentationDataModule, SegDomainSpec, SegmentationDataModule
    from syn2real.data.unpaired import UnpairedImageDataModule

_HOMES = {
    "BaseDataModule": "datamodule", "LoaderConfig": "datamodule",
    "DigitsDataModule": "datamodule", "DomainPairDataModule": "datamodule", "DomainSpec": "datamodule",
    "DigitsSegmentationDataModule": "segmentation", "SegDomainSpec": "segmentation",
    "SegmentationDataModule": "segmentation", "UnpairedImageDataModule": "unpaired",
    "RareClassSampling": "rare_class",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'syn2real.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"syn2real.data.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
