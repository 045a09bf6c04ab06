"""Rare-class sampling of source images (DAFormer, Hoyer et al., CVPR 2022, §3.3 "Rare Class Sampling").

Each source sample is drawn in three steps instead of taken from a permutation:

1. a class ``c`` with probability ``p(c) ∝ exp((1 − f_c) / T)`` (Eq. 6), ``f_c`` the source pixel frequency of ``c``
   (classes absent from the source get 0);
2. an image uniformly among those that hold at least ``min_pixels`` pixels of ``c``;
3. the image's random crop, repeated up to ``crop_retries`` times until it keeps at least
   ``min_crop_ratio × min_pixels`` pixels of ``c`` (the last crop is kept when none does, as in the official code).

``min_pixels`` counts pixels of the label maps the statistics were taken on (the prepared labels at full
resolution; GTA5: 1914×1052). So that the rule degrades sensibly on small images, the threshold of image ``i`` for
class ``c`` is ``min(min_pixels, ⌈max_image_fraction × pixels_i⌉, max_j n_jc)``: at most 1 % of the image by default
(GTA5's 2.0 M and SYNTHIA's 0.97 M pixels leave 3,000 unchanged; a 48×48 digits canvas asks for 24 pixels), and never
more than the image richest in ``c`` holds, so every class present in the source keeps at least one image.

Two departures from the official code, both deliberate: the thresholds compare with ``≥`` (the official code: ``>``),
so the image richest in ``c`` always qualifies; and the sampler, not the dataset, draws class and image, from a
generator seeded by (run seed, epoch, pass), so a run is deterministic for any number of workers and resumes
mid-epoch like every other training loader (:mod:`syn2real.data.resumable`). An epoch keeps the length of the source
list; under DDP rank ``r`` of ``W`` takes every ``W``-th draw, so ``W`` ranks of batch ``B`` see the draws of one
process of batch ``W × B``.

(mmseg's ``RandomCrop(cat_max_ratio=0.75)``, which DAFormer's pipeline also uses, is a different rule — re-crop while
one class covers more than 75 % of the crop — and is not part of this option.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from syn2real.data.resumable import ResumableSampler

__all__ = [
    "RareClassCrops",
    "RareClassPlan",
    "RareClassSampler",
    "RareClassSampling",
    "class_counts_of",
    "rare_class_probabilities",
]

# the 5th word of the draws' seed sequence: keeps them apart from the item seeds of resumable.item_seeds
_STREAM = 0x52435321


@dataclass
class RareClassSampling:
    """``data.init_args.rare_class_sampling``: DAFormer's rare-class sampling of source images (``null``: off).

    Args:
        temperature: ``T`` of ``p(c) ∝ exp((1 − f_c) / T)``; smaller favours rare classes more (DAFormer: 0.01).
        min_pixels: pixels of the sampled class an image must hold to be drawn, at the statistics' resolution
            (DAFormer: 3000 on GTA5's 1914×1052 labels); capped per image, see ``max_image_fraction``.
        min_crop_ratio: the crop must keep ``min_crop_ratio × min_pixels`` pixels of the class (DAFormer: 0.5);
            0 takes the first crop.
        max_image_fraction: caps ``min_pixels`` at this fraction of each image's pixels, so that small images
            (the 48×48 digits canvases) are not all excluded; 1 % leaves GTA5 and SYNTHIA at 3000.
        crop_retries: new crops tried after the first (DAFormer: 10).
        stats_file: the class statistics; default ``<list stem>_class_stats.json`` beside the source list (written
            by ``data_prep``, or by ``python data_prep/class_stats.py --list <list>``).
    """

    temperature: float = 0.01
    min_pixels: int = 3000
    min_crop_ratio: float = 0.5
    max_image_fraction: float = 0.01
    crop_retries: int = 10
    stats_file: str | None = None

    def __post_init__(self) -> None:
        key = "data.init_args.rare_class_sampling"
        if not self.temperature > 0:
            raise ValueError(f"{key}.temperature must be > 0 (DAFormer: 0.01), got {self.temperature}")
        if self.min_pixels < 1:
            raise ValueError(f"{key}.min_pixels must be >= 1 (DAFormer: 3000), got {self.min_pixels}")
        if not 0.0 <= self.min_crop_ratio <= 1.0:
            raise ValueError(f"{key}.min_crop_ratio must be in [0, 1] (DAFormer: 0.5), got {self.min_crop_ratio}")
        if not 0.0 < self.max_image_fraction <= 1.0:
            raise ValueError(f"{key}.max_image_fraction must be in (0, 1], got {self.max_image_fraction}")
        if self.crop_retries < 0:
            raise ValueError(f"{key}.crop_retries must be >= 0 (DAFormer: 10), got {self.crop_retries}")


def rare_class_probabilities(frequency: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """``p(c) = exp((1 − f_c)/T) / Σ_k exp((1 − f_k)/T)`` over the classes with ``f_c > 0`` (DAFormer Eq. 6); classes
    absent from the source get 0. Computed in float64 with the largest exponent subtracted (``T = 0.01`` gives
    exponents up to 100)."""
    f = np.asarray(frequency, dtype=np.float64)
    present = f > 0
    if not present.any():
        raise ValueError("rare-class sampling: no class has any pixel in the source statistics")
    logits = np.where(present, (1.0 - f) / float(temperature), -np.inf)
    weights = np.exp(logits - logits[present].max())
    return weights / weights.sum()


@dataclass(frozen=True)
class RareClassPlan:
    """What the sampler draws from: per class its probability, the images that qualify and the pixels their crop must
    keep (image indices are positions in the source training dataset)."""

    probabilities: np.ndarray  # (C,)
    frequency: np.ndarray  # (C,) pixel frequency over the source training images
    holders: tuple[np.ndarray, ...]  # per class: indices of the images drawn for it
    crop_pixels: tuple[np.ndarray, ...]  # per class, aligned with holders: pixels of c the crop must keep

    @classmethod
    def build(
        cls,
        counts: Sequence[Mapping[int, int]],
        image_pixels: Sequence[int],
        num_classes: int,
        config: RareClassSampling,
    ) -> RareClassPlan:
        """The plan of images with sparse per-class pixel ``counts`` (``{class: pixels}``) and ``image_pixels``."""
        n = len(counts)
        if n == 0 or len(image_pixels) != n:
            raise ValueError(f"rare-class sampling needs per-image counts and pixel totals, got {n} and "
                             f"{len(image_pixels)}")
        dense = np.zeros((n, num_classes), dtype=np.int64)
        for i, item in enumerate(counts):
            for c, pixels in item.items():
                dense[i, int(c)] = int(pixels)
        totals = dense.sum(axis=0)
        frequency = totals / max(int(totals.sum()), 1)
        probabilities = rare_class_probabilities(frequency, config.temperature)
        cap = np.ceil(config.max_image_fraction * np.asarray(image_pixels, dtype=np.float64)).astype(np.int64)
        per_image = np.minimum(config.min_pixels, np.maximum(cap, 1))
        holders, crop_pixels = [], []
        for c in range(num_classes):
            have = dense[:, c]
            threshold = np.minimum(per_image, have.max())  # never more than the richest image holds
            chosen = np.flatnonzero((have > 0) & (have >= threshold))
            holders.append(chosen)
            crop_pixels.append(np.ceil(config.min_crop_ratio * threshold[chosen]).astype(np.int64))
        return cls(probabilities, frequency, tuple(holders), tuple(crop_pixels))

    def draw(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` draws of (class, image, pixels of the class the crop must keep)."""
        classes = rng.choice(len(self.probabilities), size=size, p=self.probabilities)
        u = rng.random(size)
        images = np.empty(size, dtype=np.int64)
        needs = np.empty(size, dtype=np.int64)
        for c in np.unique(classes):
            at = classes == c
            pick = np.minimum((u[at] * len(self.holders[c])).astype(np.int64), len(self.holders[c]) - 1)
            images[at] = self.holders[c][pick]
            needs[at] = self.crop_pixels[c][pick]
        return classes, images, needs


class RareClassSampler(ResumableSampler):
    """A :class:`~syn2real.data.resumable.ResumableSampler` whose pass is ``total_size`` rare-class draws instead of a
    permutation; yields ``(image index, item seed, class, crop pixels)`` for :class:`RareClassCrops` (through
    :class:`~syn2real.data.resumable.SeededItems`). ``shuffle`` does not apply: the draws are random by nature."""

    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, seed: int, drop_last: bool, plan: RareClassPlan
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self.plan = plan

    def draws(self, epoch: int, pass_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(classes, images, crop pixels, item seeds) of every position of a pass, all ranks together."""
        n = len(self.dataset)  # type: ignore[arg-type]
        rng = np.random.default_rng([self.seed, epoch, pass_index, n, _STREAM])
        classes, images, needs = self.plan.draw(rng, self.total_size)
        seeds = rng.integers(0, 2**32, size=self.total_size, dtype=np.uint64)
        return classes, images, needs, seeds

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:  # type: ignore[override]
        skip = self.begin_pass()
        classes, images, needs, seeds = self.draws(self.epoch, self.current_pass)
        for pos in range(self.rank, self.total_size, self.num_replicas)[skip:]:
            yield int(images[pos]), int(seeds[pos]), int(classes[pos]), int(needs[pos])


class RareClassCrops(Dataset):
    """A segmentation dataset whose item ``(index, class, crop_pixels)`` re-crops image ``index`` up to
    ``crop_retries`` times until the crop keeps ``crop_pixels`` pixels of ``class``; a plain ``index`` is the
    dataset's item. The image is decoded once; each crop draws from the item's seeded pipeline, so the result depends
    only on the item seed."""

    def __init__(self, dataset: Dataset, crop_retries: int = 10) -> None:
        for needed in ("load", "transformed"):
            if not callable(getattr(dataset, needed, None)):
                raise TypeError(f"RareClassCrops needs a dataset with {needed}(), got {type(dataset).__name__}")
        self.dataset = dataset
        self.crop_retries = int(crop_retries)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, c, need = key
        image, label = self.dataset.load(index)  # type: ignore[attr-defined]
        x, y = self.dataset.transformed(image, label)  # type: ignore[attr-defined]
        for _ in range(self.crop_retries if need > 0 else 0):
            if int((y == c).sum()) >= need:
                break
            x, y = self.dataset.transformed(image, label)  # type: ignore[attr-defined]
        return x, y

    def __getattr__(self, name: str) -> Any:
        # attributes of the wrapped dataset (images, labels, item_path, ...); never called for our own attributes
        if name.startswith("__") or name in {"dataset", "crop_retries"}:
            raise AttributeError(name)
        return getattr(self.dataset, name)


def class_counts_of(stats: Mapping[str, Any], labels: Sequence[str]) -> tuple[list[dict[int, int]], list[int]]:
    """The sparse counts and pixel totals of ``labels`` (label paths as written in the list) from a class-statistics
    record, in the order of ``labels`` (a subset of the list, e.g. after a held-out source split)."""
    where = {label: i for i, label in enumerate(stats["labels"])}
    missing = [label for label in labels if label not in where]
    if missing:
        raise ValueError(f"class statistics of {stats.get('list')} have no entry for {missing[:3]}")
    counts = [{int(c): int(n) for c, n in stats["counts"][where[label]].items()} for label in labels]
    pixels = [int(stats["image_pixels"][where[label]]) for label in labels]
    return counts, pixels

