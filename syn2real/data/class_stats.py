"""Per-image class pixel counts of a segmentation list: what rare-class sampling (DAFormer, Hoyer et al. 2022, §3.3)
draws source images from.

``<list stem>_class_stats.json`` beside a list file (``train.txt`` -> ``train_class_stats.json``) holds, in list
order, each label file's pixel count per class (sparse: only the classes present) and its pixel total, and over the
whole list the pixel count per class and its frequency ``f_c = n_c / sum_k n_k`` (ignored pixels, 255, excluded).
``data_prep/{gta5,cityscapes,synthia}.py`` write it beside every list they write (the counts come from the label maps
they convert, so it costs no extra pass), the embedded segmentation digits beside their training lists, and
``data_prep/class_stats.py --list <train.txt>`` (or :func:`write_class_stats`) computes it for a tree prepared before
it existed, or for any list of ``<image> <label>`` lines.

The file is written compactly (one JSON line): GTA5's 24,966 entries would otherwise make it a long scroll.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from syn2real.core.labels import IGNORE_INDEX
from syn2real.data.datasets import CorruptImageError, DatasetLayoutError
from syn2real.io import atomic_write

__all__ = [
    "CLASS_STATS_FORMAT",
    "class_counts",
    "class_stats_from_counts",
    "class_stats_path",
    "compute_class_stats",
    "list_label_paths",
    "read_class_stats",
    "write_class_stats",
]

CLASS_STATS_FORMAT = "syn2real-class-stats-v1"


def class_stats_path(list_file: str | Path) -> Path:
    """Where the class statistics of ``list_file`` live: ``<folder>/<stem>_class_stats.json``."""
    path = Path(list_file)
    return path.with_name(f"{path.stem}_class_stats.json")


def list_label_paths(list_file: str | Path) -> list[str]:
    """The label column of a segmentation list, as written (relative to the list's folder, or absolute)."""
    path = Path(list_file)
    if not path.is_file():
        raise DatasetLayoutError(f"segmentation list file {path} does not exist; expected '<image> <label>' lines")
    labels = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetLayoutError(
                f"{path}:{lineno}: expected '<image> <label>' (class statistics need labels), got {line!r}")
        labels.append(parts[1])
    if not labels:
        raise DatasetLayoutError(f"segmentation list file {path} has no entries")
    return labels


def class_counts(label: np.ndarray, num_classes: int, where: str = "label") -> dict[int, int]:
    """Sparse pixel count per class of one HxW train-id map (``{class: pixels}``, only classes present; 255 is left
    out). A value outside ``0..num_classes-1`` and 255 is an error naming ``where``."""
    counts = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    bad = [v for v in np.flatnonzero(counts[num_classes:]).tolist() if v + num_classes != IGNORE_INDEX]
    if bad:
        raise DatasetLayoutError(
            f"{where} holds values {[v + num_classes for v in bad][:5]} outside 0..{num_classes - 1} and "
            f"{IGNORE_INDEX}; expected train ids of {num_classes} classes"
        )
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts[:num_classes])}


def _count_file(job: tuple[str, int]) -> tuple[dict[int, int], int]:
    path, num_classes = job
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P"):
                raise DatasetLayoutError(f"label {path} has PIL mode {img.mode}; expected an 8-bit PNG of train ids")
            label = np.array(img, dtype=np.uint8)
    except FileNotFoundError as err:
        raise DatasetLayoutError(f"label {path} listed for class statistics does not exist") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot read label map {path}: {err}") from err
    return class_counts(label, num_classes, f"label {path}"), int(label.size)


def _map(jobs: list[tuple[str, int]], workers: int) -> Iterator[tuple[dict[int, int], int]]:
    with contextlib.ExitStack() as stack:
        if workers <= 1 or len(jobs) <= 1:
            yield from map(_count_file, jobs)
            return
        pool = stack.enter_context(multiprocessing.get_context().Pool(min(workers, len(jobs))))
        yield from pool.imap(_count_file, jobs, chunksize=16)


def class_stats_from_counts(
    list_name: str,
    labels: Sequence[str],
    counts: Sequence[Mapping[int, int]],
    image_pixels: Sequence[int],
    num_classes: int,
    classes: Sequence[str] | None = None,
    ignored_pixels: int | None = None,
) -> dict[str, Any]:
    """The class-statistics record of a list from its per-image sparse counts (list order)."""
    if not len(labels) == len(counts) == len(image_pixels):
        raise ValueError(f"{len(labels)} labels, {len(counts)} counts and {len(image_pixels)} pixel totals differ")
    totals = np.zeros(num_classes, dtype=np.int64)
    for item in counts:
        for c, n in item.items():
            totals[int(c)] += int(n)
    labelled = int(totals.sum())
    ignored = int(sum(image_pixels)) - labelled if ignored_pixels is None else int(ignored_pixels)
    return {
        "format": CLASS_STATS_FORMAT,
        "list": list_name,
        "num_classes": int(num_classes),
        "classes": list(classes) if classes is not None else None,
        "ignore_index": IGNORE_INDEX,
        "images": len(labels),
        "labels": list(labels),
        "image_pixels": [int(n) for n in image_pixels],
        "counts": [{str(c): int(n) for c, n in sorted(item.items())} for item in counts],
        "pixels": totals.tolist(),
        "ignored_pixels": ignored,
        "frequency": (totals / labelled).tolist() if labelled else [0.0] * num_classes,
        "images_with_class": [int(sum(1 for item in counts if item.get(c, 0) > 0)) for c in range(num_classes)],
    }


def _read_classes(list_file: Path) -> list[str] | None:
    file = list_file.parent / "classes.txt"
    if not file.is_file():
        return None
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def compute_class_stats(list_file: str | Path, num_classes: int | None = None, workers: int = 0) -> dict[str, Any]:
    """Read every label of ``list_file`` and count its pixels per class. ``num_classes``: default the length of
    ``classes.txt`` beside the list; ``workers`` processes read the labels (0: this one)."""
    path = Path(list_file)
    labels = list_label_paths(path)
    classes = _read_classes(path)
    if num_classes is None:
        if classes is None:
            raise DatasetLayoutError(f"no classes.txt beside {path}: give num_classes (--num_classes)")
        num_classes = len(classes)
    if classes is not None and len(classes) != num_classes:
        classes = None  # classes.txt names another class set: do not record wrong names
    jobs = [(str(path.parent / label), int(num_classes)) for label in labels]
    counts, pixels = [], []
    for item, total in _map(jobs, workers):
        counts.append(item)
        pixels.append(total)
    return class_stats_from_counts(path.name, labels, counts, pixels, int(num_classes), classes)


def _write(stats: Mapping[str, Any], out: Path) -> Path:
    text = json.dumps(stats, separators=(",", ":")) + "\n"
    atomic_write(out, lambda f: f.write(text.encode()))
    return out


def write_class_stats(
    list_file: str | Path, num_classes: int | None = None, workers: int = 0, stats: Mapping[str, Any] | None = None
) -> Path:
    """Write (atomically) the class statistics of ``list_file`` beside it (:func:`class_stats_path`); computed with
    :func:`compute_class_stats` unless ``stats`` is given. Returns the file written."""
    if stats is None:
        stats = compute_class_stats(list_file, num_classes, workers)
    return _write(stats, class_stats_path(list_file))


def read_class_stats(list_file: str | Path, stats_file: str | Path | None = None, key: str = "stats_file") -> dict:
    """The class statistics of ``list_file`` (``stats_file``, default beside the list), checked to describe that very
    list (same label files in the same order); errors name ``key`` and the command that writes the file."""
    path = Path(stats_file) if stats_file is not None else class_stats_path(list_file)
    fix = f"write it with: python data_prep/class_stats.py --list {list_file}"
    if not path.is_file():
        raise DatasetLayoutError(f"class statistics {path} ({key}) do not exist; {fix}")
    try:
        stats = json.loads(path.read_text())
    except ValueError as err:
        raise DatasetLayoutError(f"class statistics {path} ({key}) are not valid JSON ({err}); {fix}") from err
    if not isinstance(stats, dict) or stats.get("format") != CLASS_STATS_FORMAT:
        raise DatasetLayoutError(f"{path} ({key}) is not a {CLASS_STATS_FORMAT} file; {fix}")
    listed = list_label_paths(list_file)
    if stats["labels"] != listed:
        raise DatasetLayoutError(
            f"class statistics {path} ({key}) describe {stats['images']} label files that are not the {len(listed)} "
            f"of {list_file} in order (the list was rewritten since); {fix}"
        )
    return stats
