"""Turn the official GTA5, Cityscapes and SYNTHIA-RAND-CITYSCAPES downloads into train-id label maps and list files.

Output (in ``out``, default ``<root>/syn2real/<N>classes``):

- ``labels/<source relative path>.png``: 8-bit single-channel (mode L) PNGs of train ids ``0..N-1``, 255 = ignore
  (GTA5 ``labels/00001.png``, Cityscapes ``labels/train/aachen/aachen_000000_000019.png``, SYNTHIA
  ``labels/0000000.png``);
- list files (GTA5 and SYNTHIA ``train.txt``; Cityscapes ``train.txt`` and ``val.txt``): one sample a line,
  ``<image path> <label path>``, both relative to the list file's folder, in natural order;
- ``classes.txt`` (one class name a line) and ``summary.json`` (counts, classes, the size-mismatch rule);
- ``<list stem>_class_stats.json`` beside each list (``train_class_stats.json``): each label's pixel count per class and
  the list's pixel frequency per class, what rare-class sampling reads (:mod:`syn2real.data.class_stats`).

Each label PNG is written to a temporary file in its folder and moved into place; an output newer than its source
label is kept (a rerun resumes; its class counts are read from the kept output). List files, ``classes.txt``,
the class statistics and ``summary.json`` are written last, atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from syn2real.data.class_stats import class_stats_from_counts, write_class_stats
from syn2real.data.datasets import CorruptImageError, DatasetLayoutError, natural_key
from syn2real.data.prep_cli import MAX_UNKNOWN_FRACTION, MISMATCH_RULES, seg_prep_parser
from syn2real.data.seg_labels import (
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_NUM_LABEL_IDS,
    SYNTHIA_ID_TO_TRAINID,
    SYNTHIA_NUM_LABEL_IDS,
    build_lut,
    classes_for,
    map_labels,
    subset_lut,
)
from syn2real.io import atomic_write, write_json_atomic

__all__ = ["prepare_gta5", "prepare_cityscapes", "prepare_synthia", "cli_main", "run_prep", "read_label_ids"]

log = logging.getLogger(__name__)

_SHOW_FIRST = 5


@dataclass(frozen=True)
class _Job:
    image: Path  # source image
    label: Path  # source label (dataset label ids)
    output: Path  # train-id PNG to write
    listed_as: str  # list file (without .txt) the pair goes to
    reader: str  # "indexed" (8-bit P/L PNG) or "synthia" (16-bit multi-channel PNG, class in R)
    lut: bytes  # 256-entry uint8 table: dataset id -> protocol id
    mismatch: str
    skip_corrupt: bool
    num_ids: int  # the dataset's label ids are 0..num_ids-1; other values are unknown (counted, mapped to 255)
    ids_name: str  # what those ids are, for messages
    max_unknown_fraction: float


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot read {path}: {err}; expected a PNG") from err


def read_label_ids(path: str | Path, reader: str) -> np.ndarray:
    """The raw HxW label ids of one source label file.

    ``indexed``: 8-bit palette (GTA5) or grey (Cityscapes ``_labelIds``) PNG, read as its index values, never as
    colours. ``synthia``: 16-bit PNG with several channels whose first (R) channel holds the class id."""
    path = Path(path)
    if reader == "synthia":
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise CorruptImageError(f"cannot decode label {path}; expected a 16-bit PNG with the class id in R")
        return arr[..., 2] if arr.ndim == 3 else arr  # cv2 gives BGR(A): R is channel 2
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.array(img)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot decode label {path}: {err}; expected an 8-bit PNG of label ids") from err
    if mode not in ("P", "L"):
        raise DatasetLayoutError(f"label {path} has PIL mode {mode}; expected an 8-bit PNG of label ids (P or L)")
    return arr


def _train_id_counts(label: np.ndarray) -> dict[int, int]:
    """Sparse pixel count per train id of a converted label (255 left out)."""
    counts = np.bincount(label.ravel(), minlength=256)
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts) if c != 255}


def _convert(job: _Job) -> dict[str, Any]:
    """Write one train-id PNG (or keep it) and count its pixels per class; report size mismatches and corrupt
    files."""
    try:
        image_size = _image_size(job.image)
        label_size = _image_size(job.label)
    except CorruptImageError as err:
        if not job.skip_corrupt:
            raise
        return {"status": "corrupt", "error": str(err)}
    result: dict[str, Any] = {"status": "done"}
    if image_size != label_size:
        result["mismatch"] = {"label_size": list(label_size), "image_size": list(image_size)}
        if job.mismatch == "skip":
            result["status"] = "skipped_mismatch"
            return result
    if job.output.exists() and job.output.stat().st_mtime_ns >= job.label.stat().st_mtime_ns:
        with Image.open(job.output) as kept:
            counted = np.array(kept, dtype=np.uint8)
        result.update(class_counts=_train_id_counts(counted), pixels=int(counted.size))
        return result
    try:
        ids = read_label_ids(job.label, job.reader)
    except CorruptImageError as err:
        if not job.skip_corrupt:
            raise
        return {"status": "corrupt", "error": str(err)}
    unknown = ids >= job.num_ids
    if unknown.any():
        values, pixels = np.unique(ids[unknown], return_counts=True)
        result["unknown"] = {int(v): int(n) for v, n in zip(values, pixels)}
        fraction = float(unknown.mean())
        if fraction > job.max_unknown_fraction:
            raise DatasetLayoutError(
                f"label {job.label}: {fraction:.1%} of its pixels hold ids {sorted(result['unknown'])[:10]} that are "
                f"not {job.ids_name} (0..{job.num_ids - 1}); expected at most {job.max_unknown_fraction:.1%} "
                "(they would become 255 = ignore). Check the download, or pass --max_unknown_fraction to accept them"
            )
    label = Image.fromarray(map_labels(ids, np.frombuffer(job.lut, dtype=np.uint8)))
    if label.size != image_size:  # nearest neighbour keeps ids
        label = label.resize(image_size, Image.Resampling.NEAREST)
    atomic_write(job.output, lambda f: label.save(f, format="PNG"))
    counted = np.asarray(label, dtype=np.uint8)
    result.update(status="written", class_counts=_train_id_counts(counted), pixels=int(counted.size))
    return result


def _progress_bar(total: int) -> Any:
    """A transient rich progress bar on a terminal, else nothing."""
    if not sys.stderr.isatty() or total < 2:
        return contextlib.nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    )


def _run_jobs(jobs: list[_Job], workers: int, description: str) -> Iterator[dict[str, Any]]:
    with _progress_bar(len(jobs)) as progress, contextlib.ExitStack() as stack:
        task = progress.add_task(description, total=len(jobs)) if progress is not None else None
        if workers <= 1 or len(jobs) <= 1:
            results: Iterator[dict[str, Any]] = map(_convert, jobs)
        else:
            pool = stack.enter_context(multiprocessing.get_context().Pool(min(workers, len(jobs))))
            results = pool.imap(_convert, jobs, chunksize=8)
        for result in results:
            if progress is not None:
                progress.update(task, advance=1)
            yield result


def _files(folder: Path, suffix: str) -> dict[str, Path]:
    """Files under ``folder`` (recursively) ending with ``suffix``, keyed by relative path minus the suffix."""
    return {
        p.relative_to(folder).as_posix()[: -len(suffix)]: p
        for p in folder.rglob(f"*{suffix}")
        if p.is_file()
    }


def _pair(
    images: dict[str, Path], labels: dict[str, Path], what: str, allow_missing: bool, counts: dict[str, int]
) -> list[str]:
    """Keys present in both; unmatched ones are an error naming the first few unless ``allow_missing``."""
    no_label = sorted(set(images) - set(labels), key=natural_key)
    no_image = sorted(set(labels) - set(images), key=natural_key)
    if (no_label or no_image) and not allow_missing:
        parts = []
        if no_label:
            parts.append(f"{len(no_label)} image(s) without a label: {', '.join(no_label[:_SHOW_FIRST])}")
        if no_image:
            parts.append(f"{len(no_image)} label(s) without an image: {', '.join(no_image[:_SHOW_FIRST])}")
        raise DatasetLayoutError(f"{what}: {'; '.join(parts)} (pass --allow_missing to skip them)")
    counts["missing_label"] += len(no_label)
    counts["missing_image"] += len(no_image)
    return sorted(set(images) & set(labels), key=natural_key)


def _require_dir(folder: Path, message: str) -> None:
    if not folder.is_dir():
        raise DatasetLayoutError(message)


def _check_options(num_classes: int, mismatch: str, max_unknown_fraction: float = MAX_UNKNOWN_FRACTION) -> None:
    classes_for(num_classes)
    if mismatch not in MISMATCH_RULES:
        raise ValueError(f"mismatch must be one of {MISMATCH_RULES}, got {mismatch!r}")
    if not 0.0 <= max_unknown_fraction <= 1.0:
        raise ValueError(f"max_unknown_fraction must be in [0, 1], got {max_unknown_fraction}")


def _lut(mapping: dict[int, int], num_classes: int) -> bytes:
    return subset_lut(num_classes)[build_lut(mapping)].tobytes()


def _finish(
    dataset: str,
    root: Path,
    out: Path,
    pairs: dict[str, list[tuple[str, Path, Path]]],
    num_classes: int,
    mismatch: str,
    workers: int,
    counts: dict[str, int],
    make_job: Callable[[Path, Path, Path, str], _Job],
    max_unknown_fraction: float,
) -> dict[str, Any]:
    """Convert every pair, then write the list files, ``classes.txt``, the class statistics of each list and
    ``summary.json``."""
    previous = out / "summary.json"
    old: dict[str, Any] = {}
    if previous.is_file():
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            old = {}
        if old.get("dataset", dataset) != dataset or old.get("num_classes", num_classes) != num_classes:
            raise DatasetLayoutError(
                f"{out} already holds {old.get('dataset')} labels with {old.get('num_classes')} classes; "
                f"give another --out for {dataset} with {num_classes} classes"
            )
    jobs = [make_job(image, label, out / "labels" / f"{key}.png", split)
            for split, items in pairs.items() for key, image, label in items]
    counts.update(written=0, done=0, mismatched=0, skipped_mismatch=0, skipped_corrupt=0, files_with_unknown_ids=0)
    # labels kept from an earlier run are not read again: their unknown ids come from its summary
    kept_unknown = {item["label"]: item["ids"] for item in old.get("files_with_unknown_ids", [])}
    unknown_files: list[dict[str, Any]] = []
    mismatched: list[dict[str, Any]] = []
    corrupt: list[str] = []
    listed: dict[str, list[str]] = {split: [] for split in pairs}
    stats_of: dict[str, tuple[list[str], list[dict[int, int]], list[int]]] = {split: ([], [], []) for split in pairs}
    for job, result in zip(jobs, _run_jobs(jobs, workers, f"{dataset}: {len(jobs)} labels")):
        status = result["status"]
        if "mismatch" in result:
            counts["mismatched"] += 1
            mismatched.append({
                "image": job.image.relative_to(root).as_posix(), "label": job.label.relative_to(root).as_posix(),
                **result["mismatch"], "action": "skipped" if status == "skipped_mismatch" else "resized",
            })
        if status == "corrupt":
            counts["skipped_corrupt"] += 1
            corrupt.append(result["error"])
            continue
        if status == "skipped_mismatch":
            counts["skipped_mismatch"] += 1
            continue
        counts[status] += 1
        label_name = job.label.relative_to(root).as_posix()
        ids = result.get("unknown") if status == "written" else kept_unknown.get(label_name)
        if ids:
            unknown_files.append({"label": label_name, "ids": {str(k): int(v) for k, v in ids.items()}})
        label_rel = Path(os.path.relpath(job.output, out)).as_posix()
        listed[job.listed_as].append(f"{Path(os.path.relpath(job.image, out)).as_posix()} {label_rel}")
        for column, value in zip(stats_of[job.listed_as], (label_rel, result["class_counts"], result["pixels"])):
            column.append(value)
    counts["files_with_unknown_ids"] = len(unknown_files)
    unknown_pixels: dict[int, int] = {}
    unknown_in: dict[int, int] = {}
    for item in unknown_files:
        for key, n in item["ids"].items():
            unknown_pixels[int(key)] = unknown_pixels.get(int(key), 0) + n
            unknown_in[int(key)] = unknown_in.get(int(key), 0) + 1
    if unknown_files:
        log.warning(
            "%s: %d label file(s) hold ids that are no %s label ids, mapped to 255 (ignore): %s; see %s",
            dataset, len(unknown_files), dataset,
            ", ".join(f"id {k}: {unknown_pixels[k]} pixels in {unknown_in[k]} file(s)" for k in sorted(unknown_pixels)),
            previous,
        )
    classes = classes_for(num_classes)
    for split, lines in listed.items():
        text = "".join(line + "\n" for line in lines)
        atomic_write(out / f"{split}.txt", lambda f, t=text: f.write(t.encode()))
    names = "".join(name + "\n" for name in classes)
    atomic_write(out / "classes.txt", lambda f: f.write(names.encode()))
    stats_files = {}
    for split, (labels_rel, class_counts, pixels) in stats_of.items():
        if labels_rel:
            stats = class_stats_from_counts(f"{split}.txt", labels_rel, class_counts, pixels, num_classes, classes)
            stats_files[f"{split}.txt"] = write_class_stats(out / f"{split}.txt", stats=stats).name
    summary = {
        "dataset": dataset,
        "root": str(root),
        "out": str(out),
        "num_classes": num_classes,
        "classes": classes,
        "mismatch_rule": mismatch,
        "counts": dict(counts),
        "lists": {f"{split}.txt": len(lines) for split, lines in listed.items()},
        "class_stats": stats_files,
        "mismatched_files": mismatched,
        "corrupt_files": corrupt,
        "max_unknown_fraction": max_unknown_fraction,
        "unknown_ids": {str(k): unknown_pixels[k] for k in sorted(unknown_pixels)},
        "unknown_id_files": {str(k): unknown_in[k] for k in sorted(unknown_in)},
        "files_with_unknown_ids": unknown_files,
        "label_format": "8-bit PNG (mode L) of train ids 0..num_classes-1, 255 = ignore",
        "list_format": "<image path> <label path> per line, relative to the list file's folder",
    }
    write_json_atomic(summary, previous)
    return summary


def _out_dir(root: Path, out: str | Path | None, num_classes: int) -> Path:
    return Path(out) if out is not None else root / "syn2real" / f"{num_classes}classes"


def _new_counts() -> dict[str, int]:
    return {"missing_label": 0, "missing_image": 0}


def prepare_gta5(
    root: str | Path,
    out: str | Path | None = None,
    num_classes: int = 19,
    mismatch: str = "resize",
    workers: int = 0,
    allow_missing: bool = False,
    skip_corrupt: bool = False,
    max_unknown_fraction: float = MAX_UNKNOWN_FRACTION,
) -> dict[str, Any]:
    """GTA5 (``images/00001.png``, ``labels/00001.png`` with Cityscapes label ids) -> train ids + ``train.txt``.

    Labels whose size differs from their image are resized (nearest neighbour) or, with ``mismatch="skip"``,
    left out of the list; both are reported in the summary. Returns the summary (also written as summary.json)."""
    root = Path(root)
    _check_options(num_classes, mismatch, max_unknown_fraction)
    expected = "expected images/00001.png and labels/00001.png"
    _require_dir(root, f"GTA5 root {root} does not exist; {expected}")
    for sub in ("images", "labels"):
        _require_dir(root / sub, f"GTA5 root {root} has no {sub}/ folder; {expected}")
    images, labels = _files(root / "images", ".png"), _files(root / "labels", ".png")
    if not images:
        raise DatasetLayoutError(f"GTA5 folder {root / 'images'} has no *.png; {expected}")
    counts = _new_counts()
    keys = _pair(images, labels, f"GTA5 root {root}", allow_missing, counts)
    lut = _lut(CITYSCAPES_ID_TO_TRAINID, num_classes)
    out_dir = _out_dir(root, out, num_classes)
    return _finish(
        "gta5", root, out_dir, {"train": [(k, images[k], labels[k]) for k in keys]}, num_classes, mismatch, workers,
        counts,
        lambda i, lab, o, s: _Job(i, lab, o, s, "indexed", lut, mismatch, skip_corrupt,
                                  CITYSCAPES_NUM_LABEL_IDS, "Cityscapes label ids", max_unknown_fraction),
        max_unknown_fraction,
    )


def prepare_cityscapes(
    root: str | Path,
    out: str | Path | None = None,
    num_classes: int = 19,
    mismatch: str = "resize",
    workers: int = 0,
    allow_missing: bool = False,
    skip_corrupt: bool = False,
    splits: Sequence[str] = ("train", "val"),
    max_unknown_fraction: float = MAX_UNKNOWN_FRACTION,
) -> dict[str, Any]:
    """Cityscapes (``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png``, ``gtFine/<split>/<city>/<name>_gtFine_
    labelIds.png``) -> ``labels/<split>/<city>/<name>.png`` + ``<split>.txt`` for train and val (test has no labels)."""
    root = Path(root)
    _check_options(num_classes, mismatch, max_unknown_fraction)
    bad = [s for s in splits if s not in ("train", "val")]
    if bad or not splits:
        raise ValueError(f"Cityscapes splits must be among train, val (test has no public labels), got {list(splits)}")
    expected = ("expected leftImg8bit/{split}/<city>/<name>_leftImg8bit.png and "
                "gtFine/{split}/<city>/<name>_gtFine_labelIds.png")
    _require_dir(root, f"Cityscapes root {root} does not exist; {expected.format(split='train')}")
    counts = _new_counts()
    pairs: dict[str, list[tuple[str, Path, Path]]] = {}
    for split in splits:  # every folder first, so the error names the first missing one
        exp = expected.format(split=split)
        for sub in ("leftImg8bit", "gtFine"):
            _require_dir(root / sub, f"Cityscapes root {root} has no {sub}/ folder; {exp}")
            _require_dir(root / sub / split, f"Cityscapes root {root} has no {sub}/{split}/ folder; {exp}")
    for split in splits:
        exp = expected.format(split=split)
        images = _files(root / "leftImg8bit" / split, "_leftImg8bit.png")
        labels = _files(root / "gtFine" / split, "_gtFine_labelIds.png")
        if not images:
            raise DatasetLayoutError(f"Cityscapes folder {root / 'leftImg8bit' / split} has no "
                                     f"<city>/*_leftImg8bit.png; {exp}")
        if not labels:
            raise DatasetLayoutError(f"Cityscapes folder {root / 'gtFine' / split} has no "
                                     f"<city>/*_gtFine_labelIds.png; {exp}")
        keys = _pair(images, labels, f"Cityscapes {split} in {root}", allow_missing, counts)
        pairs[split] = [(f"{split}/{k}", images[k], labels[k]) for k in keys]
    lut = _lut(CITYSCAPES_ID_TO_TRAINID, num_classes)
    return _finish(
        "cityscapes", root, _out_dir(root, out, num_classes), pairs, num_classes, mismatch, workers, counts,
        lambda i, lab, o, s: _Job(i, lab, o, s, "indexed", lut, mismatch, skip_corrupt,
                                  CITYSCAPES_NUM_LABEL_IDS, "Cityscapes label ids", max_unknown_fraction),
        max_unknown_fraction,
    )


def prepare_synthia(
    root: str | Path,
    out: str | Path | None = None,
    num_classes: int = 19,
    mismatch: str = "resize",
    workers: int = 0,
    allow_missing: bool = False,
    skip_corrupt: bool = False,
    max_unknown_fraction: float = MAX_UNKNOWN_FRACTION,
) -> dict[str, Any]:
    """SYNTHIA-RAND-CITYSCAPES (``RGB/0000000.png``, ``GT/LABELS/0000000.png``: 16-bit, class id in R) -> train ids
    + ``train.txt``. Use ``num_classes=16`` or ``13`` for the SYNTHIA->Cityscapes protocols."""
    root = Path(root)
    _check_options(num_classes, mismatch, max_unknown_fraction)
    expected = "expected RGB/0000000.png and GT/LABELS/0000000.png"
    _require_dir(root, f"SYNTHIA root {root} does not exist; {expected}")
    for sub in ("RGB", "GT", "GT/LABELS"):
        _require_dir(root / sub, f"SYNTHIA root {root} has no {sub}/ folder; {expected}")
    images, labels = _files(root / "RGB", ".png"), _files(root / "GT" / "LABELS", ".png")
    if not images:
        raise DatasetLayoutError(f"SYNTHIA folder {root / 'RGB'} has no *.png; {expected}")
    counts = _new_counts()
    keys = _pair(images, labels, f"SYNTHIA root {root}", allow_missing, counts)
    lut = _lut(SYNTHIA_ID_TO_TRAINID, num_classes)
    return _finish(
        "synthia", root, _out_dir(root, out, num_classes), {"train": [(k, images[k], labels[k]) for k in keys]},
        num_classes, mismatch, workers, counts,
        lambda i, lab, o, s: _Job(i, lab, o, s, "synthia", lut, mismatch, skip_corrupt,
                                  SYNTHIA_NUM_LABEL_IDS, "SYNTHIA class ids", max_unknown_fraction),
        max_unknown_fraction,
    )


_PREPARE = {"gta5": prepare_gta5, "cityscapes": prepare_cityscapes, "synthia": prepare_synthia}


def cli_main(dataset: str, argv: list[str] | None, description: str) -> int:
    """The shared command line of ``data_prep/{gta5,cityscapes,synthia}.py``; 0 on success, 2 on a layout error."""
    return run_prep(dataset, seg_prep_parser(dataset, description).parse_args(argv))


def run_prep(dataset: str, args: argparse.Namespace) -> int:
    """Convert ``dataset`` with the options parsed by :func:`~syn2real.data.prep_cli.seg_prep_parser` and print a
    summary; 0 on success, 2 on a layout error."""
    kwargs = {"splits": args.splits} if dataset == "cityscapes" else {}
    try:
        summary = _PREPARE[dataset](args.root, args.out, args.num_classes, args.mismatch, args.workers,
                                    args.allow_missing, args.skip_corrupt,
                                    max_unknown_fraction=args.max_unknown_fraction, **kwargs)
    except (DatasetLayoutError, CorruptImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    lists = ", ".join(f"{name} {n}" for name, n in summary["lists"].items())
    print(f"{dataset}: written {counts['written']}, kept (already done) {counts['done']}, "
          f"size mismatches {counts['mismatched']} ({summary['mismatch_rule']}), "
          f"corrupt skipped {counts['skipped_corrupt']}, unpaired skipped "
          f"{counts['missing_label'] + counts['missing_image']}, label files with unknown ids (now 255) "
          f"{counts['files_with_unknown_ids']}; lists: {lists} -> {summary['out']}")
    if summary.get("class_stats"):
        print(f"  class statistics (rare-class sampling): {', '.join(summary['class_stats'].values())}")
    for item in summary["mismatched_files"][:20]:
        print(f"  size mismatch: {item['label']} {item['label_size']} vs image {item['image_size']} "
              f"-> {item['action']}", file=sys.stderr)
    return 0
