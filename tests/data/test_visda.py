from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import REPO, VISDA17_CLASSES, config_args, make_visda17_tree

from syn2real.data.datasets import DatasetLayoutError, ImageListDataset
from syn2real.data.visda import VISDA17_CLASSES as PACKAGE_CLASSES
from syn2real.data.visda import check_visda17_split, write_visda17_lists


def test_classes_are_visda_order() -> None:
    assert PACKAGE_CLASSES == VISDA17_CLASSES and len(PACKAGE_CLASSES) == 12


def test_data_prep_writes_checked_lists_that_the_loader_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_visda17_tree(tmp_path / "visda", per_class=3)
    spec = importlib.util.spec_from_file_location("visda17_prep", REPO / "data_prep" / "visda17.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--root", str(root), "--max_per_class", "2"])
    report = json.loads(capsys.readouterr().out)
    assert report["train"]["images"] == 24 and report["validation"]["per_class"]["truck"] == 2
    lists = root / "lists"
    assert (lists / "visda17_classes.txt").read_text().split() == VISDA17_CLASSES
    ds = ImageListDataset(root / "validation", lists / "visda17_validation.txt", classes=VISDA17_CLASSES)
    assert len(ds) == 24 and sorted(set(ds.targets)) == list(range(12))
    assert all(p.suffix == ".jpg" for p, _ in ds.samples)
    # the full lists equal the official ones
    full = write_visda17_lists(root, tmp_path / "full")
    assert Path(full["train"]["list_file"]).read_text() == (root / "train" / "image_list.txt").read_text()


def test_layout_errors_name_the_file_and_line(tmp_path: Path) -> None:
    root = make_visda17_tree(tmp_path / "visda", per_class=1)
    with pytest.raises(DatasetLayoutError, match="test/ from the official"):
        check_visda17_split(root, "test")
    lst = root / "train" / "image_list.txt"
    lines = lst.read_text().splitlines()
    lst.write_text("\n".join([lines[0].replace(" 0", " 3")] + lines[1:]) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"image_list.txt:1: aeroplane/.* label 3 is 'car'"):
        check_visda17_split(root, "train")
    lst.write_text("\n".join(lines + ["car/missing.png 3"]) + "\n")
    with pytest.raises(DatasetLayoutError, match="1 of 13 listed images are missing"):
        check_visda17_split(root, "train")
    (root / "validation" / "image_list.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="image_list.txt does not exist"):
        check_visda17_split(root, "validation")


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs" / "visda17").glob("*.yaml")
                                          if p.name not in ("resnet50.yaml", "base.yaml")))
def test_visda17_configs_parse_and_the_resnet50_overlay_applies(config: str, capsys: pytest.CaptureFixture) -> None:
    from syn2real.command import main

    folder = REPO / "configs" / "visda17"
    overlays = [[], ["--config", str(folder / "resnet50.yaml")]] if config in ("asg.yaml", "csg.yaml") else [[]]
    for extra in overlays:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *config_args(folder / config), *extra, "--print_config"])
        assert exit_info.value.code in (0, None)
        printed = capsys.readouterr().out
        assert "num_classes: 12" in printed and "aeroplane" in printed
        assert ("backbone: resnet50" if extra else "backbone: resnet101") in printed
