"""Segmentation list files, joint image/mask transforms, native-resolution evaluation labels, pseudo-label folders
and the segmentation data module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_png

from syn2real.data.datasets import DatasetLayoutError
from syn2real.data.segmentation import (
    SegDomainSpec,
    SegmentationDataModule,
    SegmentationListDataset,
    read_classes,
    read_segmentation_list,
)
from syn2real.data.transforms import build_transform

CLASSES = ["road", "car", "sky"]


def make_list(root: Path, n: int = 3, size: tuple[int, int] = (12, 8), labelled: bool = True,
              classes: list[str] | None = CLASSES, label_size: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """``<root>/images/i.png`` (RGB, w x h), ``<root>/labels/i.png`` (train ids 0..2 and 255) and ``list.txt``."""
    rng = np.random.default_rng(seed)
    w, h = size
    lw, lh = label_size or size
    lines = []
    for i in range(n):
        write_png(root / "images" / f"{i}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        label = rng.integers(0, 3, (lh, lw)).astype(np.uint8)
        label[0, 0] = 255
        write_png(root / "labels" / f"{i}.png", label)
        lines.append(f"images/{i}.png labels/{i}.png" if labelled else f"images/{i}.png")
    (root / "list.txt").write_text("# a comment\n" + "\n".join(lines) + "\n\n")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root / "list.txt"


def test_read_list_relative_paths_and_classes(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d")
    images, labels = read_segmentation_list(list_file)
    assert images == [tmp_path / "d" / "images" / f"{i}.png" for i in range(3)]
    assert labels == [tmp_path / "d" / "labels" / f"{i}.png" for i in range(3)]
    assert read_classes(list_file) == CLASSES
    assert read_classes(make_list(tmp_path / "e", classes=None)) is None


def test_missing_list_and_missing_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="nope.txt does not exist"):
        read_segmentation_list(tmp_path / "nope.txt")
    list_file = make_list(tmp_path / "d")
    (tmp_path / "d" / "labels" / "1.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 listed file\(s\) do not exist.*labels/1.png"):
        read_segmentation_list(list_file)
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c\n")
    with pytest.raises(DatasetLayoutError, match="bad.txt:1: expected"):
        read_segmentation_list(bad)


def test_label_out_of_range_names_the_file(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d")
    write_png(tmp_path / "d" / "labels" / "2.png", np.full((8, 12), 7, dtype=np.uint8))
    ds = SegmentationListDataset(list_file, num_classes=3)
    x, y = ds[0]
    assert x.shape == (3, 8, 12) and y.shape == (8, 12) and y.dtype == torch.long
    with pytest.raises(DatasetLayoutError, match=r"labels/2.png has values \[7\] outside 0..2"):
        ds[2]


def test_unlabelled_lines_give_all_ignore_maps(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d", labelled=False)
    ds = SegmentationListDataset(list_file, 3, labelled=False, return_index=True)
    x, y, i = ds[1]
    assert i == 1 and y.shape == (8, 12) and bool((y == 255).all())
    assert not ds.has_labels
    with pytest.raises(DatasetLayoutError, match="have no label but this split must be labelled"):
        SegmentationListDataset(list_file, 3, labelled=True)


def test_a_flip_flips_image_and_mask_together(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d")
    plain = SegmentationListDataset(list_file, 3)
    flipped = SegmentationListDataset(list_file, 3, build_transform([{"name": "HorizontalFlip", "p": 1.0}], "t"))
    x0, y0 = plain[0]
    x1, y1 = flipped[0]
    assert torch.equal(y1, y0.flip(-1))
    assert torch.equal(x1.to(x0.dtype), x0.flip(-1))
    # a random crop takes the same window of both
    crop = SegmentationListDataset(list_file, 3, build_transform([{"name": "Crop", "x_min": 2, "y_min": 1,
                                                                   "x_max": 10, "y_max": 6}], "t"))
    xc, yc = crop[0]
    assert torch.equal(yc, y0[1:6, 2:10]) and torch.equal(xc.to(x0.dtype), x0[:, 1:6, 2:10])


def test_native_label_resolution_keeps_the_label_size(tmp_path: Path) -> None:
    # the image is 12x8, its label 24x16 (a full-resolution label); only the image goes through the pipeline
    list_file = make_list(tmp_path / "d", label_size=(24, 16))
    resize = build_transform([{"name": "Resize", "height": 4, "width": 6}], "t")
    native = SegmentationListDataset(list_file, 3, resize, label_resolution="native")
    x, y = native[0]
    assert x.shape == (3, 4, 6) and y.shape == (16, 24)
    with pytest.raises(DatasetLayoutError, match="is 24x16 but its image .* is 12x8"):
        SegmentationListDataset(list_file, 3, resize, label_resolution="transformed")[0]
    with pytest.raises(ValueError, match="label_resolution must be"):
        SegmentationListDataset(list_file, 3, label_resolution="full")  # type: ignore[arg-type]


def test_pseudo_label_folder_is_resized_nearest_and_a_missing_png_is_clear(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d", n=2, size=(12, 8))
    ds = SegmentationListDataset(list_file, 3, labelled=False, return_index=True)
    folder = tmp_path / "pseudo_labels"
    ds.pseudo_label_dir = folder
    small = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)  # 3x2, a quarter of the image size
    write_png(folder / "000000.png", small)
    _, y, _ = ds[0]
    assert y.shape == (8, 12)
    assert torch.equal(y, torch.from_numpy(np.kron(small, np.ones((4, 4), dtype=np.uint8))).long())
    with pytest.raises(FileNotFoundError, match=r"pseudo-label .*000001.png .* is missing"):
        ds[1]


def test_pseudo_labels_are_cropped_with_their_image(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d", n=1)
    crop = build_transform([{"name": "Crop", "x_min": 4, "y_min": 2, "x_max": 12, "y_max": 8}], "t")
    ds = SegmentationListDataset(list_file, 3, crop, labelled=False, label_resolution="native")
    ds.pseudo_label_dir = tmp_path / "pl"
    label = np.arange(96, dtype=np.uint8).reshape(8, 12) % 3
    write_png(tmp_path / "pl" / "000000.png", label)
    _, y = ds[0]
    assert torch.equal(y, torch.from_numpy(label[2:8, 4:12]).long())


def _datamodule(src: Path, tgt: Path, val: Path, **kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(
        source=SegDomainSpec(str(src)), target=SegDomainSpec(str(tgt), labelled=True),
        target_eval=SegDomainSpec(str(val)), batch_size=2, num_workers=0, **kwargs,
    )


def test_datamodule_datasets_and_batches(tmp_path: Path) -> None:
    src = make_list(tmp_path / "src", n=4, seed=1)
    tgt = make_list(tmp_path / "tgt", n=4, seed=2)
    val = make_list(tmp_path / "val", n=2, seed=3, label_size=(24, 16))
    dm = _datamodule(src, tgt, val, eval_transforms=[{"name": "Resize", "height": 4, "width": 6}])
    dm.setup("fit")
    assert dm.classes == CLASSES and dm.num_classes == 3 and dm.eval_domains == ["target"]
    assert set(dm.datasets) == {"source_train", "target_train", "target_predict", "target_eval"}
    # the target is never trained on its labels: all-255 until a round writes pseudo-labels
    batch = next(iter(dm.train_dataloader()))[0]
    x_s, y_s = batch["source"]
    x_t, y_t, idx = batch["target"]
    assert x_s.shape == (2, 3, 8, 12) and y_s.shape == (2, 8, 12) and bool((y_t == 255).all()) and idx.shape == (2,)
    # pseudo-labelling input: evaluation transforms, labels resized with the image (diagnostics)
    x_p, y_p, _ = dm.datasets["target_predict"][0]
    assert x_p.shape == (3, 4, 6) and y_p.shape == (4, 6)
    x_e, y_e = next(iter(dm.val_dataloader()[0]))
    assert x_e.shape[-2:] == (4, 6) and y_e.shape[-2:] == (16, 24)

    held = _datamodule(src, tgt, val, source_val_fraction=0.25)
    held.setup("fit")
    assert held.eval_domains == ["target", "source"]
    assert len(held.datasets["source_val"]) == 1 and len(held.datasets["source_train"]) == 3
    assert not set(held.datasets["source_val"].images) & set(held.datasets["source_train"].images)


def test_classes_mismatch_between_source_and_target_is_clear(tmp_path: Path) -> None:
    src = make_list(tmp_path / "src")
    tgt = make_list(tmp_path / "tgt", classes=["road", "car", "sky", "bus"])
    val = make_list(tmp_path / "val")
    with pytest.raises(DatasetLayoutError, match=r"classes.txt of data.target .* lists .* but the source has"):
        _datamodule(src, tgt, val).setup("fit")
    no_classes = make_list(tmp_path / "src2", classes=None)
    with pytest.raises(DatasetLayoutError, match="no data.classes given and no classes.txt"):
        _datamodule(no_classes, src, val).setup("fit")


def test_mixed_sizes_in_a_batch_name_the_file(tmp_path: Path) -> None:
    list_file = make_list(tmp_path / "d", n=2)
    write_png(tmp_path / "d" / "images" / "1.png", np.zeros((9, 15, 3), np.uint8))
    write_png(tmp_path / "d" / "labels" / "1.png", np.zeros((9, 15), np.uint8))
    ds = SegmentationListDataset(list_file, 3, build_transform([]))
    with pytest.raises(DatasetLayoutError, match=r"images/1\.png: its image is 15x9 .* 12x8 is expected"):
        next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
