from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import make_class_tree, write_png

from syn2real.data.datamodule import DomainPairDataModule, DomainSpec, split_indices
from syn2real.data.datasets import (
    CorruptImageError,
    DatasetLayoutError,
    ImageFolderDataset,
    ImageListDataset,
    UnlabelledFolderDataset,
    load_image,
)
from syn2real.data.transforms import build_transform


def test_folder_dataset_classes_labels_and_tensors(class_tree: Path) -> None:
    ds = ImageFolderDataset(class_tree, mode="L", transform=build_transform([{"name": "Normalize", "mean": [0.5], "std": [0.5]}]))
    assert ds.classes == ["0", "1", "2"]
    assert len(ds) == 24
    assert sorted(set(ds.targets)) == [0, 1, 2]
    x, y = ds[9]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y == 1


def test_folder_natural_class_order(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path / "d", ["10", "2", "1"], per_class=1)
    assert ImageFolderDataset(root, mode="L").classes == ["1", "2", "10"]


def test_empty_class_folder_names_the_folder(class_tree: Path) -> None:
    (class_tree / "3").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"3 is empty"):
        ImageFolderDataset(class_tree)


def test_missing_root_and_flat_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    write_png(tmp_path / "flat" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetLayoutError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "flat")


def test_class_set_mismatch_is_reported(class_tree: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"missing \['3'\]"):
        ImageFolderDataset(class_tree, classes=["0", "1", "2", "3"])


def test_corrupt_image_names_the_file(class_tree: Path) -> None:
    bad = class_tree / "1" / "000.png"
    bad.write_bytes(b"not a png at all")
    ds = ImageFolderDataset(class_tree, mode="L")
    with pytest.raises(CorruptImageError, match=str(bad)):
        ds[8]


def test_list_dataset_visda_format(class_tree: Path) -> None:
    lines = [f"{c}/{i:03d}.png {c}" for c in ("0", "1", "2") for i in range(8)]
    (class_tree / "image_list.txt").write_text("\n".join(lines) + "\n")
    ds = ImageListDataset(class_tree, "image_list.txt", classes=["zero", "one", "two"], mode="RGB")
    assert len(ds) == 24 and ds.classes == ["zero", "one", "two"]
    x, y = ds[20]
    assert x.shape == (3, 28, 28) and y == 2


def test_list_dataset_errors(class_tree: Path) -> None:
    (class_tree / "bad.txt").write_text("0/000.png zero\n")
    with pytest.raises(DatasetLayoutError, match=r"bad.txt:1"):
        ImageListDataset(class_tree, "bad.txt")
    (class_tree / "missing.txt").write_text("0/000.png 0\n0/999.png 0\n")
    with pytest.raises(DatasetLayoutError, match="999.png"):
        ImageListDataset(class_tree, "missing.txt")
    (class_tree / "range.txt").write_text("0/000.png 5\n")
    with pytest.raises(DatasetLayoutError, match="outside 0..2"):
        ImageListDataset(class_tree, "range.txt", classes=["a", "b", "c"])
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        ImageListDataset(class_tree, "nope.txt")


def test_unlabelled_folder(class_tree: Path) -> None:
    ds = UnlabelledFolderDataset(class_tree, mode="L")
    assert len(ds) == 24 and set(ds.targets) == {-1}


def test_transforms_unknown_name_and_bad_args() -> None:
    with pytest.raises(ValueError, match=r"train\[1\].*NoSuchTransform"):
        build_transform([{"name": "HorizontalFlip"}, {"name": "NoSuchTransform"}], "train")
    with pytest.raises(ValueError, match="Resize"):
        build_transform([{"name": "Resize", "heigth": 3}])
    nested = build_transform([{"name": "OneOf", "transforms": [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"}]}])
    out = nested(image=np.zeros((4, 4, 1), np.uint8))["image"]
    assert out.shape == (1, 4, 4)


def test_split_indices_seeded_and_disjoint() -> None:
    a = split_indices(100, 0.2, seed=3)
    assert a == split_indices(100, 0.2, seed=3)
    assert a != split_indices(100, 0.2, seed=4)
    kept, held = a
    assert len(held) == 20 and not set(kept) & set(held) and len(kept) + len(held) == 100


def _datamodule(tmp_path: Path, **kwargs) -> DomainPairDataModule:
    src = make_class_tree(tmp_path / "src", ["0", "1", "2"], per_class=10, seed=0)
    tgt = make_class_tree(tmp_path / "tgt", ["0", "1", "2"], per_class=4, seed=1)
    return DomainPairDataModule(
        source=DomainSpec(str(src)),
        target=DomainSpec(str(tgt)),
        batch_size=4,
        num_workers=0,
        image_mode="L",
        **kwargs,
    )


def test_datamodule_paired_batches_cycle_the_shorter_domain(tmp_path: Path) -> None:
    dm = _datamodule(tmp_path, source_val_fraction=0.2)
    dm.setup("fit")
    assert dm.eval_domains == ["target", "source"]
    assert len(dm.datasets["source_train"]) == 24 and len(dm.datasets["source_val"]) == 6
    loader = dm.train_dataloader()
    batches = list(iter(loader))
    # source has 24 images -> 6 batches of 4; target (12 images, 3 batches) cycles to match
    assert len(batches) == 6
    batch = batches[0][0] if isinstance(batches[0], tuple) else batches[0]
    assert set(batch) == {"source", "target"}
    x_s, y_s = batch["source"]
    assert x_s.shape == (4, 1, 28, 28) and y_s.dtype == torch.int64
    assert [len(loader_) for loader_ in dm.val_dataloader()] == [3, 2]


def test_datamodule_target_split_and_class_mismatch(tmp_path: Path) -> None:
    dm = _datamodule(tmp_path, target_split=0.25, split_seed=1)
    dm.setup("fit")
    train_idx = set(dm.datasets["target_train"].indices)
    eval_idx = set(dm.datasets["target_eval"].indices)
    assert len(eval_idx) == 3 and not train_idx & eval_idx

    other = make_class_tree(tmp_path / "other", ["0", "1", "7"], per_class=2)
    bad = DomainPairDataModule(
        source=DomainSpec(str(tmp_path / "src")), target=DomainSpec(str(other)), num_workers=0, image_mode="L"
    )
    with pytest.raises(DatasetLayoutError, match=r"other"):
        bad.setup("fit")


def test_datamodule_unlabelled_target_with_separate_eval(tmp_path: Path) -> None:
    src = make_class_tree(tmp_path / "src", ["a", "b"], per_class=4)
    tgt = make_class_tree(tmp_path / "tgt", ["a", "b"], per_class=3, seed=2)
    dm = DomainPairDataModule(
        source=DomainSpec(str(src)),
        target=DomainSpec(str(tgt), format="unlabelled"),
        target_eval=DomainSpec(str(tgt)),
        batch_size=2,
        num_workers=0,
        image_mode="L",
    )
    dm.setup("fit")
    assert set(dm.datasets["target_train"].targets) == {-1}
    assert sorted(set(dm.datasets["target_eval"].targets)) == [0, 1]


def test_dark_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    # a dark 16-bit greyscale photo (0..12000 of 65535) used to read as 255 on 97% of its pixels
    values = np.linspace(0, 12000, 64 * 64).reshape(64, 64).astype(np.uint16)
    values[0, 0] = 65535
    write_png(tmp_path / "dark" / "0" / "a.png", values)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    x, _ = ImageFolderDataset(tmp_path / "dark", mode="L")[0]
    assert x.shape == (1, 64, 64)
    assert np.array_equal(x[0].numpy(), expected)
    assert float((x[0] == 255).float().mean()) == 1 / (64 * 64)  # only the one full-scale pixel
    rgb = load_image(tmp_path / "dark" / "0" / "a.png", "RGB")
    assert rgb.shape == (64, 64, 3) and all(np.array_equal(rgb[..., c], expected) for c in range(3))


def test_32bit_and_float_images_name_the_file(tmp_path: Path) -> None:
    wide, floats = tmp_path / "wide.tif", tmp_path / "float.tif"
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(wide)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(floats)
    with pytest.raises(CorruptImageError, match=rf"{wide}.*70000.*expected 8-bit or 16-bit"):
        load_image(wide, "L")
    with pytest.raises(CorruptImageError, match=rf"{floats}.*floating-point"):
        load_image(floats, "RGB")


def _mixed_size_datamodule(tmp_path: Path, **kwargs) -> DomainPairDataModule:
    """A source folder of 28x28 images and one 40x30 image, no transform that fixes the size."""
    src = make_class_tree(tmp_path / "src", ["0", "1", "2"], per_class=4)
    write_png(src / "1" / "odd.png", np.zeros((30, 40), np.uint8))
    tgt = make_class_tree(tmp_path / "tgt", ["0", "1", "2"], per_class=2)
    return DomainPairDataModule(source=DomainSpec(str(src)), target=DomainSpec(str(tgt)), num_workers=0,
                                image_mode="L", **kwargs)


def test_mixed_image_sizes_name_the_file_instead_of_failing_in_stack(tmp_path: Path) -> None:
    dm = _mixed_size_datamodule(tmp_path, batch_size=13, source_val_fraction=0.0)
    dm.setup("fit")
    with pytest.raises(DatasetLayoutError, match=r"odd\.png.*(40x30.*28x28|28x28.*40x30).*Resize"):
        next(iter(dm.train_dataloader()))
    # evaluation with one image per batch needs no common size
    dm = _mixed_size_datamodule(tmp_path / "b", batch_size=2, eval_batch_size=1, source_val_fraction=0.99)
    dm.setup("fit")
    sizes = {tuple(x.shape[-2:]) for x, _ in dm.val_dataloader()[1]}
    assert sizes == {(28, 28), (30, 40)}
    dm = _mixed_size_datamodule(tmp_path / "c", batch_size=2, eval_batch_size=13, source_val_fraction=0.99)
    dm.setup("fit")
    with pytest.raises(DatasetLayoutError, match=r"odd\.png"):
        list(dm.val_dataloader()[1])


def test_out_of_range_label_in_a_list_names_the_list_line_not_the_target(tmp_path: Path) -> None:
    classes = [str(c) for c in range(10)]
    src = make_class_tree(tmp_path / "src", classes, per_class=1)
    tgt = make_class_tree(tmp_path / "tgt", classes, per_class=1)
    lines = [f"{c}/000.png {c}" for c in classes]
    lines.insert(7, "7/000.png 12")  # a typo: 12 in a 10-class list, line 8
    (src / "list.txt").write_text("\n".join(lines) + "\n")
    dm = DomainPairDataModule(source=DomainSpec(str(src), format="list", list_file="list.txt"),
                              target=DomainSpec(str(tgt)), num_workers=0, image_mode="L")
    with pytest.raises(DatasetLayoutError, match=rf"{src / 'list.txt'}:8 .*label 12 is outside 0\.\.9.*data\.init_args"
                                                 r"\.target") as err:
        dm.setup("fit")
    assert "class folders" not in str(err.value)
    # with the classes given, the list itself is checked: file and line again
    with pytest.raises(DatasetLayoutError, match=rf"{src / 'list.txt'}:8: label 12 is outside 0\.\.9 \(10 classes\)"):
        ImageListDataset(src, "list.txt", classes=classes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "data.init_args.batch_size must be >= 1, got 0"),
        ({"eval_batch_size": 0}, "data.init_args.eval_batch_size must be >= 1, got 0"),
        ({"num_workers": -1}, "data.init_args.num_workers must be >= 0, got -1"),
        ({"source_val_fraction": 1.0}, r"data.init_args.source_val_fraction must be in \[0, 1\), got 1.0"),
        ({"source_val_fraction": -0.1}, r"data.init_args.source_val_fraction must be in \[0, 1\), got -0.1"),
        ({"target_split": 0.0}, r"data.init_args.target_split must be in \(0, 1\), got 0.0"),
        ({"target_split": 1.5}, r"data.init_args.target_split must be in \(0, 1\), got 1.5"),
    ],
)
def test_out_of_range_options_name_the_config_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DomainPairDataModule(**kwargs)


def test_segmentation_and_unpaired_options_name_the_config_key() -> None:
    from syn2real.data.segmentation import SegmentationDataModule
    from syn2real.data.unpaired import UnpairedImageDataModule

    with pytest.raises(ValueError, match="data.init_args.batch_size must be >= 1, got 0"):
        SegmentationDataModule(batch_size=0)
    with pytest.raises(ValueError, match=r"data.init_args.source_val_fraction must be in \[0, 1\), got 2"):
        SegmentationDataModule(source_val_fraction=2)
    with pytest.raises(ValueError, match="data.init_args.crop_size must be >= 1, got 0"):
        UnpairedImageDataModule(crop_size=0)
    with pytest.raises(ValueError, match="data.init_args.repeat must be >= 1, got 0"):
        UnpairedImageDataModule(repeat=0)
