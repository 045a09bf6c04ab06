"""Image datasets for the common layouts: class folders, list files (VisDA-2017 style), unlabelled folders.

Every dataset yields ``(image_tensor, label)`` where ``label`` is ``-1`` when unknown. A target domain's
labels (when a layout has them) are for evaluation only: methods never train on them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "IGNORE_LABEL",
    "DatasetLayoutError",
    "CorruptImageError",
    "ImageFolderDataset",
    "TransformedSubset",
    "apply_transform",
    "check_batch_shapes",
    "item_source",
    "SameSizeBatches",
    "ImageListDataset",
    "UnlabelledFolderDataset",
    "load_image",
    "scale_16bit",
    "natural_key",
    "read_image_list",
    "resolve_list_file",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IGNORE_LABEL = -1
_SHOW_LINES = 5


class DatasetLayoutError(ValueError):
    """The directory or list file does not have the expected layout."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded."""


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders ``"2"`` before ``"10"``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def scale_16bit(values: np.ndarray, path: Path | str) -> np.ndarray:
    """16-bit integer intensities (0..65535) -> uint8 by ``round(v * 255 / 65535)``, so the full range maps to the
    full range instead of clipping at 255; values outside 0..65535 (32-bit images) are an error naming ``path``."""
    values = np.asarray(values)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise CorruptImageError(
            f"image {path} has integer values {low}..{high}; expected 8-bit or 16-bit (0..65535) intensities"
        )
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def load_image(path: Path | str, mode: str) -> np.ndarray:
    """Decode ``path`` into an HxWxC uint8 array in PIL ``mode`` ("L" or "RGB"); 16-bit greyscale images are scaled
    (65535 -> 255) instead of clipped, 48/64-bit colour ones are reduced to 8 bits per channel by PIL."""
    try:
        with Image.open(path) as img:
            img.load()
            source_mode = img.mode
            raw = np.array(img) if source_mode in (*_SIXTEEN_BIT_MODES, "F") else np.array(img.convert(mode))
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot decode image {path}: {err}; expected a readable image file") from err
    if source_mode == "F":
        raise CorruptImageError(
            f"image {path} holds floating-point values (PIL mode F); expected 8-bit or 16-bit integer intensities"
        )
    if source_mode in _SIXTEEN_BIT_MODES:
        grey = scale_16bit(raw, path)
        arr = grey if mode == "L" else np.repeat(grey[..., None], 3, axis=2)
    else:
        arr = raw
    return arr[..., None] if arr.ndim == 2 else arr


def _list_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def pair_by_name(first: Path, second: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Images under ``first`` matched with the image of the same relative path under ``second``, whatever either's
    extension (``a/b.png`` ↔ ``a/b.jpg``): ``([(key, first_file, second_file)], [relative paths without a match])``
    in natural order; ``key`` is the relative path without extension."""
    others = {f.relative_to(second).with_suffix("").as_posix(): f for f in _list_images(second, True)}
    pairs, missing = [], []
    for f in _list_images(first, True):
        key = f.relative_to(first).with_suffix("").as_posix()
        if key in others:
            pairs.append((key, f, others[key]))
        else:
            missing.append(f.relative_to(first).as_posix())
    return pairs, missing


def item_source(dataset: Any, index: int) -> str:
    """The file an item of ``dataset`` is read from (its ``item_path``), for error messages."""
    locate = getattr(dataset, "item_path", None)
    return str(locate(index)) if callable(locate) else f"item {index} of {type(dataset).__name__}"


def _size(shape: tuple[int, ...]) -> str:
    """``WxH`` of a CxHxW / HxW tensor shape, else the shape itself."""
    return f"{shape[-1]}x{shape[-2]}" if len(shape) >= 2 else str(shape)


def check_batch_shapes(items: Sequence[Any], indices: Sequence[int], dataset: Any) -> None:
    """Every tensor of a batch's items must have the shape of the first item's, or collating would fail in
    ``torch.stack`` without naming a file: raise naming the odd file, its size and the expected size."""
    if len(items) < 2 or not isinstance(items[0], (tuple, list)):
        return
    first = items[0]
    for pos, ref in enumerate(first):
        if not isinstance(ref, torch.Tensor):
            continue
        for index, item in zip(indices[1:], items[1:]):
            value = item[pos]
            if isinstance(value, torch.Tensor) and value.shape != ref.shape:
                what = ("image", "label")[pos] if pos < 2 else f"element {pos}"
                raise DatasetLayoutError(
                    f"{item_source(dataset, index)}: its {what} is {_size(tuple(value.shape))} (shape "
                    f"{tuple(value.shape)}) after the transforms, but {_size(tuple(ref.shape))} is expected, the size "
                    f"of {item_source(dataset, indices[0])} in the same batch; a batch needs items of one size: add a "
                    "Resize or a fixed-size crop to the data transforms (e.g. data.init_args.train_transforms / "
                    "eval_transforms), or use batch size 1"
                )


class SameSizeBatches:
    """Batched item loading (``__getitems__``, which torch's ``DataLoader`` calls with a batch's indices) that
    checks the items have one size before they are stacked (:func:`check_batch_shapes`)."""

    def __getitems__(self, indices: list[int]) -> list[Any]:
        items = [self[i] for i in indices]  # type: ignore[index]
        check_batch_shapes(items, indices, self)
        return items


class _ImageDataset(SameSizeBatches, Dataset):
    """Shared loading: a list of (path, label), a mode, a transform, optional in-memory cache."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        transform: Callable | None,
        mode: str,
        in_memory: bool,
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.transform = transform
        self.mode = mode
        self._cache: list[np.ndarray] | None = None
        if in_memory:
            self._cache = [load_image(p, mode) for p, _ in samples]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def item_path(self, index: int) -> Path:
        """The file item ``index`` is read from."""
        return self.samples[index][0]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """The decoded HxWxC uint8 image and its label, before any transform."""
        path, label = self.samples[index]
        image = self._cache[index] if self._cache is not None else load_image(path, self.mode)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.load(index)
        return apply_transform(self.transform, image), label


def apply_transform(transform: Callable | None, image: np.ndarray) -> torch.Tensor:
    """Albumentations ``transform`` on an HxWxC array, or a plain CHW uint8 tensor without one."""
    if transform is None:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return transform(image=image)["image"]


class TransformedSubset(SameSizeBatches, Dataset):
    """``indices`` of a dataset with their own transform (a held-out split evaluated without augmentation).

    With ``return_index`` an item is ``(image, label, i)``, ``i`` its position in this subset: self-training
    looks pseudo-labels up by it. The label of a target item is for evaluation only; methods never train on it.
    """

    def __init__(
        self, base: _ImageDataset, indices: Sequence[int], transform: Callable | None, return_index: bool = False
    ) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform
        self.classes = base.classes
        self.return_index = return_index

    @property
    def targets(self) -> list[int]:
        return [self.base.samples[i][1] for i in self.indices]

    def item_path(self, index: int) -> Path:
        """The file item ``index`` is read from."""
        return self.base.item_path(self.indices[index])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, int]:
        image, label = self.base.load(self.indices[index])
        if self.return_index:
            return apply_transform(self.transform, image), label, index
        return apply_transform(self.transform, image), label


class ImageFolderDataset(_ImageDataset):
    """``<root>/<class>/<image>``; classes are the sub-folder names (natural order) unless given."""

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        mode: str = "RGB",
        in_memory: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(f"image folder {root} does not exist; expected <root>/<class>/<image> files")
        found = sorted((d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=natural_key)
        if not found:
            raise DatasetLayoutError(f"{root} has no class sub-folders; expected <root>/<class>/<image> files")
        if classes is None:
            classes = found
        else:
            classes = list(classes)
            missing = [c for c in classes if c not in found]
            extra = [c for c in found if c not in classes]
            if missing or extra:
                raise DatasetLayoutError(
                    f"class folders of {root} differ from the expected classes {classes}: "
                    f"missing {missing}, unexpected {extra}"
                )
        samples: list[tuple[Path, int]] = []
        for idx, name in enumerate(classes):
            files = _list_images(root / name, recursive=True)
            if not files:
                raise DatasetLayoutError(
                    f"class folder {root / name} is empty; expected images with extensions {IMAGE_EXTENSIONS}"
                )
            samples.extend((f, idx) for f in files)
        self.root = root
        super().__init__(samples, list(classes), transform, mode, in_memory)


class ImageListDataset(_ImageDataset):
    """A list file of ``relative/path label`` lines (the VisDA-2017 ``image_list.txt`` format).

    Paths are relative to ``root``. ``classes`` names the integer labels in order; when omitted they
    are ``"0" .. "K-1"`` with K = max label + 1.
    """

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        mode: str = "RGB",
        in_memory: bool = False,
    ) -> None:
        root = Path(root)
        list_path = resolve_list_file(root, list_file)
        entries = read_image_list(list_path, root)
        samples = [(path, label) for path, label, _ in entries]
        self.lines = [lineno for _, _, lineno in entries]
        self.list_file = list_path
        classes = list(classes) if classes is not None else [str(i) for i in range(max(s[1] for s in samples) + 1)]
        bad = [(n, label) for _, label, n in entries if not 0 <= label < len(classes)]
        if bad:
            lineno, label = bad[0]
            raise DatasetLayoutError(
                f"{list_path}:{lineno}: label {label} is outside 0..{len(classes) - 1} ({len(classes)} classes); "
                f"{len(bad)} line(s) like this, e.g. lines {[n for n, _ in bad[:_SHOW_LINES]]}"
            )
        missing = [p for p, _ in samples if not p.is_file()]
        if missing:
            raise DatasetLayoutError(
                f"{list_path}: {len(missing)} listed image(s) do not exist under {root}, e.g. {missing[:3]}"
            )
        self.root = root
        super().__init__(samples, classes, transform, mode, in_memory)

    def lines_outside(self, num_classes: int) -> list[tuple[int, int]]:
        """``(line number, label)`` of the list's lines whose label is not in ``0..num_classes-1``."""
        return [(n, label) for n, (_, label) in zip(self.lines, self.samples) if not 0 <= label < num_classes]


def resolve_list_file(root: str | Path, list_file: str | Path) -> Path:
    """``list_file`` as given when it exists or is absolute, else relative to ``root``."""
    path = Path(list_file)
    return Path(root) / path if not path.is_absolute() and not path.exists() else path


def read_image_list(list_path: Path, root: Path) -> list[tuple[Path, int, int]]:
    """``(root / relative path, label, line number)`` of each ``relative/path label`` line of a list file."""
    if not list_path.is_file():
        raise DatasetLayoutError(f"list file {list_path} does not exist; expected lines 'relative/path label'")
    entries: list[tuple[Path, int, int]] = []
    for lineno, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise DatasetLayoutError(f"{list_path}:{lineno}: expected 'relative/path <int label>', got {line!r}")
        entries.append((root / parts[0], int(parts[1]), lineno))
    if not entries:
        raise DatasetLayoutError(f"list file {list_path} has no entries")
    return entries


class UnlabelledFolderDataset(_ImageDataset):
    """Every image under ``root`` (recursively), label ``-1``."""

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        mode: str = "RGB",
        in_memory: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(f"image folder {root} does not exist")
        files = _list_images(root, recursive=True)
        if not files:
            raise DatasetLayoutError(f"{root} contains no images with extensions {IMAGE_EXTENSIONS}")
        self.root = root
        super().__init__([(f, IGNORE_LABEL) for f in files], list(classes or []), transform, mode, in_memory)
