"""Label tables of the driving-scene segmentation benchmarks (GTA5, SYNTHIA -> Cityscapes) and small numpy helpers.

Every source is mapped to the 19 Cityscapes *train ids* (0..18, 255 = ignore); the SYNTHIA protocols then keep 16
or 13 of them (``subset_lut``). GTA5 label PNGs carry Cityscapes *label ids*, so both use ``CITYSCAPES_ID_TO_TRAINID``.
"""

from __future__ import annotations

import numpy as np

from syn2real.core.labels import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAINID",
    "CITYSCAPES_NUM_LABEL_IDS",
    "SYNTHIA_NUM_LABEL_IDS",
    "SYNTHIA_ID_TO_TRAINID",
    "SYNTHIA_16_CLASSES",
    "SYNTHIA_13_CLASSES",
    "CITYSCAPES_PALETTE",
    "build_lut",
    "map_labels",
    "subset_lut",
    "classes_for",
    "palette_for",
    "colorize",
]

CITYSCAPES_CLASSES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]

# Cityscapes label id (cityscapesScripts labels.py) -> train id; every id not listed is ignored (255).
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# Cityscapes label ids are 0..33 (cityscapesScripts labels.py; GTA5 uses the same ids): any other value in a label
# file is not a class of the dataset at all, counted by data_prep as an unknown id.
CITYSCAPES_NUM_LABEL_IDS = 34

# SYNTHIA-RAND-CITYSCAPES class id (its README: 0 void, 1 sky, 2 building, 3 road, 4 sidewalk, 5 fence,
# 6 vegetation, 7 pole, 8 car, 9 traffic sign, 10 pedestrian, 11 bicycle, 12 motorcycle, 13 parking-slot,
# 14 road-work, 15 traffic light, 16 terrain, 17 rider, 18 truck, 19 bus, 20 train, 21 wall, 22 lanemarking)
# -> Cityscapes train id, as in AdaptSegNet/CBST. Terrain, truck and train are listed by the README but carry no
# pixels in the release; they map to their Cityscapes train ids (9, 14, 16) so nothing is silently relabelled,
# and the 16/13-class protocols drop them anyway. Void, parking-slot, road-work and lanemarking are ignored.
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}

# SYNTHIA-RAND-CITYSCAPES class ids are 0..22 (its README); other values are unknown ids.
SYNTHIA_NUM_LABEL_IDS = 23

SYNTHIA_16_CLASSES: list[str] = [c for c in CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train")]
SYNTHIA_13_CLASSES: list[str] = [c for c in SYNTHIA_16_CLASSES if c not in ("wall", "fence", "pole")]

CITYSCAPES_PALETTE: list[tuple[int, int, int]] = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]

_SUBSETS = {19: CITYSCAPES_CLASSES, 16: SYNTHIA_16_CLASSES, 13: SYNTHIA_13_CLASSES}


def classes_for(num_classes: int) -> list[str]:
    """Class names of the 19-class Cityscapes protocol or the 16/13-class SYNTHIA protocols, in id order."""
    if num_classes not in _SUBSETS:
        raise ValueError(f"num_classes must be 19, 16 or 13, got {num_classes}")
    return list(_SUBSETS[num_classes])


def build_lut(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 lookup table: ``lut[k] = mapping[k]``, 255 for every key not in ``mapping``."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for key, value in mapping.items():
        if not 0 <= key < 256 or not 0 <= value < 256:
            raise ValueError(f"label mapping {key} -> {value} is outside 0..255")
        lut[key] = value
    return lut


def map_labels(label_ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply ``lut`` to an integer label map (uint8, uint16, ...); ids beyond the table map to 255."""
    ids = np.asarray(label_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"label map must be an integer array, got {ids.dtype}")
    lut = np.asarray(lut, dtype=np.uint8)
    inside = (ids >= 0) & (ids < len(lut))
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.uint8)
    out[inside] = lut[ids[inside]]
    return out


def subset_lut(num_classes: int) -> np.ndarray:
    """uint8 LUT from the 19 Cityscapes train ids to the ids of the 19/16/13-class protocol (others 255)."""
    names = classes_for(num_classes)
    return build_lut({CITYSCAPES_CLASSES.index(name): i for i, name in enumerate(names)})


def palette_for(num_classes: int) -> list[tuple[int, int, int]]:
    """The official Cityscapes colours of the classes kept by the 19/16/13-class protocol, in id order."""
    return [CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)] for name in classes_for(num_classes)]


def colorize(label: np.ndarray, palette: list[tuple[int, int, int]] | np.ndarray) -> np.ndarray:
    """HxW train-id map -> HxWx3 uint8 image in ``palette`` colours; 255 and ids without a colour are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:IGNORE_INDEX]
    table[: len(colours)] = colours
    ids = np.asarray(label)
    if ids.ndim != 2:
        raise ValueError(f"label map must be HxW, got shape {ids.shape}")
    ids = ids.astype(np.int64)
    return table[np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX)]
