"""Unpaired image data for enhancement GANs (EnlightenGAN): a folder of low-light images and a folder of
normal-light images, with no pairing between them, plus an optional paired evaluation set.

Training batches are ``{"low": (x_low, -1), "normal": (x_normal, -1)}`` of random crops in [-1, 1] (the shorter
folder cycles). Evaluation batches are ``(x_low, x_reference)`` pairs at full resolution (batch 1 by default, since
photos differ in size), matched by relative path: a low-light image and its clean original, for PSNR/SSIM only.

Layouts read:

- ``root``: the output of ``data_prep/lowlight.py`` (``train/low``, ``train/normal``, ``test/low``,
  ``test/reference``); or give the four folders yourself.
- EnlightenGAN's unpaired training set: ``low: <set>/trainA``, ``normal: <set>/trainB``.
- LOL (paired, evaluation): ``eval_low: LOL/eval15/low``, ``eval_reference: LOL/eval15/high``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from syn2real.data.datamodule import BaseDataModule, LoaderConfig, check_min
from syn2real.data.datasets import (
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    SameSizeBatches,
    UnlabelledFolderDataset,
    item_source,
    load_image,
    pair_by_name,
)
from syn2real.data.transforms import run_seed

__all__ = ["PairedFolderDataset", "RepeatedDataset", "UnpairedImageDataModule", "to_gan_tensor"]

log = logging.getLogger(__name__)


def to_gan_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(127.5).sub(1.0)


class RepeatedDataset(SameSizeBatches, Dataset):
    """Each item of ``base`` ``times`` times per epoch (each time with a new random crop): an epoch of a folder of
    a few dozen photos is then a useful number of steps."""

    def __init__(self, base: Dataset, times: int) -> None:
        if times < 1:
            raise ValueError(f"repeat must be >= 1, got {times}")
        self.base, self.times = base, int(times)

    def __len__(self) -> int:
        return len(self.base) * self.times  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.base[index % len(self.base)]  # type: ignore[arg-type]

    def item_path(self, index: int) -> str:
        """The file item ``index`` is read from."""
        return item_source(self.base, index % len(self.base))  # type: ignore[arg-type]


class PairedFolderDataset(SameSizeBatches, Dataset):
    """``(low, reference)`` pairs in [-1, 1]: every image under ``low`` with the file of the same relative path under
    ``reference`` (any image extension). ``max_side`` downsizes both (area interpolation) so the longer side is at
    most that many pixels; ``None`` keeps full resolution."""

    def __init__(self, low: str | Path, reference: str | Path, max_side: int | None = None) -> None:
        self.low_root, self.ref_root = Path(low), Path(reference)
        for key, folder in (("eval_low", self.low_root), ("eval_reference", self.ref_root)):
            if not folder.is_dir():
                raise DatasetLayoutError(f"data.{key} folder {folder} does not exist")
        pairs, missing = pair_by_name(self.low_root, self.ref_root)
        if not pairs and not missing:
            raise DatasetLayoutError(f"{self.low_root} contains no images with extensions {IMAGE_EXTENSIONS}")
        self.pairs: list[tuple[Path, Path]] = [(low, ref) for _, low, ref in pairs]
        if missing:
            raise DatasetLayoutError(
                f"{len(missing)} low-light evaluation image(s) have no reference of the same name under "
                f"{self.ref_root}, e.g. {missing[:3]}"
            )
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.pairs)

    def item_path(self, index: int) -> Path:
        """The low-light file of pair ``index``."""
        return self.pairs[index][0]

    def _resize(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.max_side is None or max(h, w) <= self.max_side:
            return image
        scale = self.max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        low_path, ref_path = self.pairs[index]
        low, ref = load_image(low_path, "RGB"), load_image(ref_path, "RGB")
        if low.shape != ref.shape:
            raise DatasetLayoutError(
                f"{low_path} is {low.shape[1]}x{low.shape[0]} but its reference {ref_path} is "
                f"{ref.shape[1]}x{ref.shape[0]}; a pair must have the same size"
            )
        return to_gan_tensor(self._resize(low)), to_gan_tensor(self._resize(ref))


class UnpairedImageDataModule(BaseDataModule):
    """Unpaired low-light / normal-light folders for training, optional paired folders for evaluation.

    Args:
        root: a ``data_prep/lowlight.py`` output folder; fills the four folders below that are not given.
        low / normal: folders of low-light and of normal-light training images (any layout, searched recursively).
        eval_low / eval_reference: paired evaluation folders (same relative names), optional.
        crop_size: random square crops for training (320 in the paper); smaller images are reflect-padded.
        flip: random horizontal flips.
        repeat: times each training image is drawn per epoch.
        batch_size: training batch (32 in the paper, over several GPUs).
        eval_batch_size: 1 unless every evaluation image has the same size.
        eval_max_side: downsize evaluation pairs to this longer side (``None``: full resolution, enhanced tile by
            tile by the method).
        num_workers / pin_memory / shuffle / drop_last: the loaders (:class:`~syn2real.data.datamodule.LoaderConfig`).
    """

    train_keys = {"low": "low", "normal": "normal"}
    eval_keys = {"target": "eval"}  # the paired evaluation set, when given
    predict_key = None

    def __init__(
        self,
        root: str | None = None,
        low: str | None = None,
        normal: str | None = None,
        eval_low: str | None = None,
        eval_reference: str | None = None,
        crop_size: int = 320,
        flip: bool = True,
        repeat: int = 1,
        batch_size: int = 32,
        eval_batch_size: int = 1,
        eval_max_side: int | None = None,
        num_workers: int = 2,
        in_memory: bool = False,
        shuffle: bool = True,
        drop_last: bool = True,
        pin_memory: bool = False,
    ) -> None:
        if root is not None:
            base = Path(root)
            if not base.is_dir():
                raise DatasetLayoutError(
                    f"data.root {base} does not exist; expected the output of data_prep/lowlight.py "
                    "(train/low, train/normal, test/low, test/reference)"
                )
            low = low or str(base / "train" / "low")
            normal = normal or str(base / "train" / "normal")
            if eval_low is None and (base / "test" / "low").is_dir():
                eval_low, eval_reference = str(base / "test" / "low"), eval_reference or str(base / "test" / "reference")
        super().__init__(LoaderConfig(batch_size, eval_batch_size, num_workers, pin_memory, shuffle, drop_last))
        for key, value in (("crop_size", crop_size), ("repeat", repeat), ("eval_max_side", eval_max_side)):
            check_min(key, value, 1)
        if (eval_low is None) != (eval_reference is None):
            raise ValueError("give both data.eval_low and data.eval_reference (paired evaluation), or neither")
        self.low, self.normal = low, normal
        self.eval_low, self.eval_reference = eval_low, eval_reference
        self.crop_size, self.flip, self.repeat = crop_size, flip, repeat
        self.eval_max_side, self.in_memory = eval_max_side, in_memory

    def train_transform(self) -> A.Compose:
        size = self.crop_size
        steps: list[Any] = [
            A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=size, width=size),
        ]
        if self.flip:
            steps.append(A.HorizontalFlip(p=0.5))
        steps += [A.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_pixel_value=255.0), ToTensorV2()]
        return A.Compose(steps, seed=run_seed())  # reproducible crops (see syn2real.data.transforms)

    def build_datasets(self) -> dict[str, Dataset]:
        datasets: dict[str, Dataset] = {}
        transform = self.train_transform()
        for key in ("low", "normal"):
            folder = getattr(self, key)
            if folder is None:
                raise DatasetLayoutError(f"data.{key} is not set; give the folder of the {key}-light training images")
            if not Path(folder).is_dir():
                raise DatasetLayoutError(f"data.{key} folder {folder} does not exist")
            dataset = UnlabelledFolderDataset(folder, transform=transform, mode="RGB", in_memory=self.in_memory)
            datasets[key] = RepeatedDataset(dataset, self.repeat)
        if self.eval_low is not None:
            datasets["eval"] = PairedFolderDataset(self.eval_low, self.eval_reference, self.eval_max_side)
        else:
            log.warning("no data.eval_low / data.eval_reference: enhancement is trained without PSNR/SSIM evaluation")
        log.info("datasets: %s", {k: len(v) for k, v in datasets.items()})  # type: ignore[arg-type]
        return datasets
