"""Albumentations pipelines built from YAML.

A pipeline is a list of ``{"name": <albumentations class>, **kwargs}`` entries, e.g.::

    train_transforms:
      - {name: Resize, height: 224, width: 224}
      - {name: HorizontalFlip, p: 0.5}
      - {name: Normalize, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}

``ToTensorV2`` is appended when the list does not end with it. A name with dots is an import path of a
transform class of your own (e.g. ``syn2real.enhance.LowLightEnhance``, the low-light enhancement stage).
Unknown names and bad arguments fail with the entry that caused them.

Random augmentations are reproducible: albumentations draws from its own generator (unseeded, it would take OS
entropy), so every pipeline is seeded from the run's seed (``PL_GLOBAL_SEED``), and
:func:`seed_worker_transforms`, the data loaders' ``worker_init_fn``, gives each loader worker its own seed derived
from torch's per-worker seed (itself drawn from the seeded main process). Training loaders go further: each item is
augmented from its own seed (:mod:`syn2real.data.resumable`), so a resumed run augments exactly as an uninterrupted
one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import albumentations as A
import torch
from albumentations.pytorch import ToTensorV2

__all__ = [
    "TransformSpec", "build_transform", "DIGITS_TRANSFORMS", "imagenet_transforms", "normalize_stats", "pipelines",
    "run_seed", "seed_worker_transforms",
]

TransformSpec = Sequence[dict[str, Any]]

DIGITS_TRANSFORMS: list[dict[str, Any]] = [{"name": "Normalize", "mean": [0.5], "std": [0.5]}]


def normalize_stats(spec: TransformSpec | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of a pipeline spec's ``Normalize`` step in [0, 1] pixel units (what attacks, corruptions and the
    mean teacher's strong view undo), or ``None`` when the spec has no ``Normalize``."""
    for entry in spec or []:
        if isinstance(entry, dict) and entry.get("name") == "Normalize":
            max_value = float(entry.get("max_pixel_value", 255.0))
            if abs(max_value - 255.0) > 1e-6:
                raise ValueError(f"Normalize with max_pixel_value {max_value}: work in pixel space (attacks, "
                                 "corruptions, strong views) assumes 8-bit images (255)")
            mean, std = entry.get("mean", (0.485, 0.456, 0.406)), entry.get("std", (0.229, 0.224, 0.225))
            as_tuple = lambda v: tuple(float(a) for a in (v if isinstance(v, (list, tuple)) else [v]))  # noqa: E731
            return as_tuple(mean), as_tuple(std)
    return None


def imagenet_transforms(size: int = 224, train: bool = True) -> list[dict[str, Any]]:
    """The usual ImageNet-normalised pipeline (random resized crop + flip for training)."""
    norm = {"name": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if train:
        return [
            {"name": "Resize", "height": int(size * 256 / 224), "width": int(size * 256 / 224)},
            {"name": "RandomCrop", "height": size, "width": size},
            {"name": "HorizontalFlip", "p": 0.5},
            norm,
        ]
    return [
        {"name": "Resize", "height": int(size * 256 / 224), "width": int(size * 256 / 224)},
        {"name": "CenterCrop", "height": size, "width": size},
        norm,
    ]


def _resolve(path: str) -> Any:
    """A transform class by its import path (``syn2real.enhance.LowLightEnhance``); None when it does not exist."""
    import importlib

    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None


def _build_one(entry: dict[str, Any], where: str) -> Any:
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"{where}: each transform must be a mapping with a 'name' key, got {entry!r}")
    kwargs = {k: v for k, v in entry.items() if k != "name"}
    name = entry["name"]
    if name == "ToTensorV2":
        return ToTensorV2(**kwargs)
    cls = _resolve(name) if "." in name else getattr(A, name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"{where}: unknown albumentations transform {name!r}")
    if name in {"Compose", "OneOf", "SomeOf", "Sequential"}:
        children = kwargs.pop("transforms", [])
        kwargs["transforms"] = [_build_one(c, f"{where}.{name}") for c in children]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot build {name} with {kwargs}: {err}") from err


def run_seed() -> int:
    """The run's seed (``seed_everything`` sets ``PL_GLOBAL_SEED``), 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def build_transform(spec: TransformSpec | None, where: str = "transforms", seed: int | None = None) -> A.Compose:
    """Compose the albumentations pipeline described by ``spec`` and end it with ``ToTensorV2``; its random draws
    are seeded with ``seed`` (default: the run's seed)."""
    steps = [_build_one(entry, f"{where}[{i}]") for i, entry in enumerate(spec or [])]
    if not steps or not isinstance(steps[-1], ToTensorV2):
        steps.append(ToTensorV2())
    return A.Compose(steps, seed=run_seed() if seed is None else seed)


def pipelines(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Iterator[A.BaseCompose]:
    """Every albumentations pipeline reachable from a dataset (its ``transform``, wrapped datasets' ones)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 4:
        return
    seen.add(id(obj))
    if isinstance(obj, A.BaseCompose):
        yield obj
        return
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, (A.BaseCompose, torch.utils.data.Dataset)):
            yield from pipelines(value, depth + 1, seen)
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.utils.data.Dataset):
            for item in value:
                yield from pipelines(item, depth + 1, seen)


def seed_worker_transforms(worker_id: int) -> None:
    """``worker_init_fn`` of every data loader: Lightning's per-worker seeding of numpy / random / torch, then a
    distinct, reproducible seed for each albumentations pipeline of the worker's copy of the dataset."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    for pipeline in pipelines(info.dataset):
        pipeline.set_random_seed(info.seed % 2**32)
