"""VisDA-2017 classification (Peng et al., 2017): check the official layout and write the list files the
``list`` data format reads.

Official layout: ``<root>/train/image_list.txt`` + ``<root>/train/<class>/*.png`` (152,397 synthetic renders) and
``<root>/validation/image_list.txt`` + ``<root>/validation/<class>/*.jpg`` (55,388 real COCO crops); each line of a
list is ``<class>/<file> <label>`` with labels 0-11 in :data:`VISDA17_CLASSES` order.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from syn2real.data.datasets import DatasetLayoutError

__all__ = ["VISDA17_CLASSES", "VISDA17_SIZES", "check_visda17_split", "write_visda17_lists"]

log = logging.getLogger(__name__)

VISDA17_CLASSES = ["aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
                   "skateboard", "train", "truck"]
VISDA17_SIZES = {"train": 152397, "validation": 55388}


def check_visda17_split(root: str | Path, split: str, check_files: bool = True) -> list[tuple[str, int]]:
    """The ``(relative path, label)`` entries of ``<root>/<split>/image_list.txt``, checked: labels 0-11, the
    class folder of each path matches its label, every listed file exists. Raises with the file and line."""
    folder = Path(root) / split
    list_file = folder / "image_list.txt"
    if not folder.is_dir():
        raise DatasetLayoutError(f"VisDA-2017: {folder} does not exist; expected <root>/{split}/ from the official "
                                 "download (train/, validation/, each with image_list.txt)")
    if not list_file.is_file():
        raise DatasetLayoutError(f"VisDA-2017: {list_file} does not exist; expected the official image_list.txt")
    entries: list[tuple[str, int]] = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"\d+", parts[1]):
            raise DatasetLayoutError(f"{list_file}:{lineno}: expected '<class>/<file> <label 0-11>', got {line!r}")
        path, label = parts[0], int(parts[1])
        if not 0 <= label < len(VISDA17_CLASSES):
            raise DatasetLayoutError(f"{list_file}:{lineno}: label {label} is outside 0-11")
        cls = path.split("/")[0]
        if cls != VISDA17_CLASSES[label]:
            raise DatasetLayoutError(f"{list_file}:{lineno}: {path} is in folder {cls!r} but label {label} is "
                                     f"{VISDA17_CLASSES[label]!r}")
        entries.append((path, label))
    if not entries:
        raise DatasetLayoutError(f"{list_file} has no entries")
    if check_files:
        missing = [p for p, _ in entries if not (folder / p).is_file()]
        if missing:
            raise DatasetLayoutError(f"{list_file}: {len(missing)} of {len(entries)} listed images are missing under "
                                     f"{folder}, e.g. {missing[:3]}")
    expected = VISDA17_SIZES.get(split)
    if expected is not None and len(entries) != expected:
        log.warning("VisDA-2017 %s: %d images listed, the official split has %d (a subset?)", split, len(entries),
                    expected)
    return entries


def write_visda17_lists(root: str | Path, out: str | Path, splits: tuple[str, ...] = ("train", "validation"),
                        max_per_class: int | None = None, seed: int = 0, check_files: bool = True
                        ) -> dict[str, dict[str, object]]:
    """Check each split and write ``<out>/visda17_<split>.txt`` (``relative/path label`` lines relative to
    ``<root>/<split>``; with ``max_per_class`` a seeded subset) and ``<out>/visda17_classes.txt``.
    Returns per split the list file and the per-class counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "visda17_classes.txt").write_text("\n".join(VISDA17_CLASSES) + "\n")
    report: dict[str, dict[str, object]] = {}
    for split in splits:
        entries = check_visda17_split(root, split, check_files=check_files)
        if max_per_class is not None:
            rng = random.Random(seed)
            by_class: dict[int, list[tuple[str, int]]] = {}
            for e in entries:
                by_class.setdefault(e[1], []).append(e)
            entries = sorted(e for lab in sorted(by_class) for e in rng.sample(by_class[lab],
                                                                                min(max_per_class, len(by_class[lab]))))
        path = out / f"visda17_{split}.txt"
        path.write_text("".join(f"{p} {label}\n" for p, label in entries))
        counts = Counter(label for _, label in entries)
        report[split] = {"list_file": str(path), "images": len(entries),
                         "per_class": {VISDA17_CLASSES[c]: counts.get(c, 0) for c in range(len(VISDA17_CLASSES))}}
    return report
