"""Tiny GTA5, Cityscapes and SYNTHIA-RAND-CITYSCAPES trees in the official layouts and label encodings.

Label maps are grids of blocks (plus one random rectangle) whose ids cycle through every id a dataset uses, so a
tree of four images holds all 19 mapped ids and some ignored ones; the image colour of a pixel is the Cityscapes
colour of its class plus noise, so a model can learn the labels. Sizes are (width, height).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from syn2real.data.seg_labels import CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_PALETTE, SYNTHIA_ID_TO_TRAINID

# Cityscapes label ids used by GTA5 and Cityscapes fixtures: the 19 mapped ids and some ignored ones (34 is no id).
CITYSCAPES_FIXTURE_IDS = sorted(CITYSCAPES_ID_TO_TRAINID) + [0, 1, 4, 34]
# SYNTHIA class ids: every id its README lists (13 parking-slot, 14 road-work, 22 lanemarking, 0 void are ignored).
SYNTHIA_FIXTURE_IDS = list(range(23))
_BLOCK = 16


def _label_map(width: int, height: int, ids: list[int], index: int, rng: np.random.Generator) -> np.ndarray:
    cols, rows = max(1, -(-width // _BLOCK)), max(1, -(-height // _BLOCK))
    per_image = cols * rows
    grid = np.array([ids[(index * per_image + k) % len(ids)] for k in range(per_image)]).reshape(rows, cols)
    label = np.kron(grid, np.ones((_BLOCK, _BLOCK), dtype=np.int64))[:height, :width]
    x0, y0 = rng.integers(0, max(1, width // 2)), rng.integers(0, max(1, height // 2))
    w, h = rng.integers(4, max(5, width // 3)), rng.integers(4, max(5, height // 3))
    label[y0 : y0 + h, x0 : x0 + w] = ids[rng.integers(0, len(ids))]
    return label


def _image(label: np.ndarray, mapping: dict[int, int], rng: np.random.Generator) -> np.ndarray:
    colours = np.full((256, 3), 40.0)
    colours[:34] = [(5 * i, 90 + 3 * i, 200 - 5 * i) for i in range(34)]  # ignored ids: distinct dull colours
    for label_id, train_id in mapping.items():
        colours[label_id] = CITYSCAPES_PALETTE[train_id]
    image = colours[np.minimum(label, 255)] + rng.normal(0.0, 12.0, size=(*label.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save_rgb(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _save_palette_ids(path: Path, label: np.ndarray) -> None:
    """Mode-P PNG whose index values are the label ids (as GTA5 ships them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8))
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        palette[label_id] = CITYSCAPES_PALETTE[train_id]
    img.putpalette(palette.tobytes())
    assert img.mode == "P"
    img.save(path)


def make_gta5_tree(
    root: str | Path, n: int = 4, size: tuple[int, int] = (64, 48), mismatch_index: int | None = None, seed: int = 0
) -> Path:
    """``images/00001.png`` (RGB) and ``labels/00001.png`` (mode P, Cityscapes label ids), 1-based names.

    ``mismatch_index`` (0-based) gets a label 8 px wider and 4 px lower than its image, as a few GTA5 frames do."""
    root, rng = Path(root), np.random.default_rng(seed)
    width, height = size
    for i in range(n):
        name = f"{i + 1:05d}.png"
        label = _label_map(width, height, CITYSCAPES_FIXTURE_IDS, i, rng)
        _save_rgb(root / "images" / name, _image(label, CITYSCAPES_ID_TO_TRAINID, rng))
        if i == mismatch_index:
            label = np.array(Image.fromarray(label.astype(np.uint8)).resize((width + 8, height - 4), Image.Resampling.NEAREST))
        _save_palette_ids(root / "labels" / name, label)
    return root


def make_cityscapes_tree(
    root: str | Path,
    n_train: int = 4,
    n_val: int = 2,
    size: tuple[int, int] = (64, 32),
    cities: tuple[str, ...] = ("aachen", "bochum"),
    seed: int = 0,
) -> Path:
    """``leftImg8bit/<split>/<city>/<city>_000000_<frame>_leftImg8bit.png`` and the matching
    ``gtFine/.../<...>_gtFine_labelIds.png`` (mode L label ids) plus an ``_instanceIds`` file the prep must ignore."""
    root, rng = Path(root), np.random.default_rng(seed)
    width, height = size
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            city = cities[i % len(cities)]
            base = f"{city}_000000_{19 + i:06d}"
            label = _label_map(width, height, CITYSCAPES_FIXTURE_IDS, i, rng).astype(np.uint8)
            _save_rgb(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png",
                      _image(label, CITYSCAPES_ID_TO_TRAINID, rng))
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(gt / f"{base}_gtFine_labelIds.png")
            Image.fromarray(label).save(gt / f"{base}_gtFine_instanceIds.png")
    return root


def make_synthia_tree(root: str | Path, n: int = 4, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """``RGB/0000000.png`` and ``GT/LABELS/0000000.png``: 16-bit 3-channel PNG, class id in R, instance id in G."""
    import cv2

    root, rng = Path(root), np.random.default_rng(seed)
    width, height = size
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{i:07d}.png"
        label = _label_map(width, height, SYNTHIA_FIXTURE_IDS, i, rng)
        _save_rgb(root / "RGB" / name, _image(label, SYNTHIA_ID_TO_TRAINID, rng))
        bgr = np.zeros((height, width, 3), dtype=np.uint16)
        bgr[..., 2] = label  # R: class id
        bgr[..., 1] = rng.integers(256, 4000, size=(height, width))  # G: instance id (beyond 8 bits)
        if not cv2.imwrite(str(root / "GT" / "LABELS" / name), bgr):
            raise OSError(f"cv2 could not write {root / 'GT' / 'LABELS' / name}")
    return root
