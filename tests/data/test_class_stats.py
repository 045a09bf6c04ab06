"""Class statistics of segmentation lists (what rare-class sampling reads): counts by hand, data_prep writes them
beside its lists, the data_prep/class_stats.py script, stale files are refused, the digits cache carries them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from syn2real.data.class_stats import (
    class_stats_path,
    compute_class_stats,
    read_class_stats,
    write_class_stats,
)
from syn2real.data.datasets import DatasetLayoutError
from syn2real.data.seg_prep import prepare_gta5

REPO = Path(__file__).resolve().parents[2]

# two 3x4 label maps of 3 classes (255 = ignore), counted by hand below
LABEL_A = np.array([[0, 0, 1, 1],
                    [0, 0, 1, 255],
                    [2, 0, 0, 0]], dtype=np.uint8)  # 0: 7, 1: 3, 2: 1, ignore: 1
LABEL_B = np.array([[1, 1, 1, 1],
                    [1, 1, 255, 255],
                    [1, 1, 1, 1]], dtype=np.uint8)  # 1: 10, ignore: 2


def tiny_list(root: Path, labels: list[np.ndarray] = (LABEL_A, LABEL_B), classes: tuple[str, ...] = ("a", "b", "c")
              ) -> Path:
    """``<root>/train.txt`` of RGB images and the given label maps, with ``classes.txt``."""
    lines = []
    for i, label in enumerate(labels):
        write_png(root / "images" / f"{i}.png", np.zeros((*label.shape, 3), np.uint8))
        write_png(root / "labels" / f"{i}.png", label)
        lines.append(f"images/{i}.png labels/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root / "train.txt"


def test_counts_and_frequency_by_hand(tmp_path: Path) -> None:
    stats = compute_class_stats(tiny_list(tmp_path))
    assert stats["labels"] == ["labels/0.png", "labels/1.png"]
    assert stats["counts"] == [{"0": 7, "1": 3, "2": 1}, {"1": 10}]  # sparse: class 0 and 2 absent from B
    assert stats["image_pixels"] == [12, 12]
    assert stats["pixels"] == [7, 13, 1]
    assert stats["ignored_pixels"] == 3
    assert stats["frequency"] == pytest.approx([7 / 21, 13 / 21, 1 / 21])
    assert stats["images_with_class"] == [1, 2, 1]
    assert stats["classes"] == ["a", "b", "c"] and stats["num_classes"] == 3


def test_write_read_and_stale_list(tmp_path: Path) -> None:
    list_file = tiny_list(tmp_path)
    with pytest.raises(DatasetLayoutError, match="class_stats.py --list"):
        read_class_stats(list_file)
    out = write_class_stats(list_file)
    assert out == tmp_path / "train_class_stats.json" == class_stats_path(list_file)
    assert read_class_stats(list_file)["pixels"] == [7, 13, 1]
    list_file.write_text("images/1.png labels/1.png\n")  # the list changed since
    with pytest.raises(DatasetLayoutError, match="not the 1 of"):
        read_class_stats(list_file)


def test_values_outside_the_classes_are_named(tmp_path: Path) -> None:
    list_file = tiny_list(tmp_path, [np.array([[0, 7]], np.uint8)])
    with pytest.raises(DatasetLayoutError, match=r"labels/0.png holds values \[7\]"):
        compute_class_stats(list_file)


def test_data_prep_writes_them_beside_its_lists(tmp_path: Path) -> None:
    from seg_runs import prepare_trees

    lists = prepare_trees(tmp_path)
    for key in ("source", "target", "target_eval"):
        written = json.loads(class_stats_path(lists[key]).read_text())
        assert written == compute_class_stats(lists[key])  # the counts of the conversion = the files read back
        assert sum(written["pixels"]) + written["ignored_pixels"] == sum(written["image_pixels"])
    summary = json.loads((lists["source"].parent / "summary.json").read_text())
    assert summary["class_stats"] == {"train.txt": "train_class_stats.json"}
    before = class_stats_path(lists["source"]).read_text()
    class_stats_path(lists["source"]).unlink()
    rerun = prepare_gta5(tmp_path / "GTA5")  # keeps every converted label: the counts come from the kept files
    assert rerun["counts"]["done"] == 4 and class_stats_path(lists["source"]).read_text() == before


def test_class_stats_script_on_an_existing_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("class_stats_script", REPO / "data_prep" / "class_stats.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # type: ignore[union-attr]
    list_file = tiny_list(tmp_path)
    assert script.main(["--list", str(list_file)]) == 0
    assert "a=33.333, b=61.905, c=4.762" in capsys.readouterr().out
    assert read_class_stats(list_file)["counts"][1] == {"1": 10}
    assert script.main(["--list", str(tmp_path / "nope.txt")]) == 2


def test_digits_cache_stats_equal_the_files(tmp_path: Path) -> None:
    from syn2real.data.digits_seg import DIGIT_SEG_CLASSES, _write_class_stats

    rng = np.random.default_rng(0)
    masks = rng.choice([0, 3, 5, 255], size=(3, 48, 48)).astype(np.uint8)
    list_file = tiny_list(tmp_path, list(masks), DIGIT_SEG_CLASSES)
    lines = list_file.read_text().splitlines()
    (tmp_path / "train_class_stats.json").unlink(missing_ok=True)
    _write_class_stats(list_file, lines, masks)  # from memory, as the cache writes them
    assert read_class_stats(list_file) == compute_class_stats(list_file)
