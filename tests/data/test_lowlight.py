"""``data_prep/lowlight.py`` and the unpaired data module."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, write_png
from PIL import Image

from syn2real.data.datasets import DatasetLayoutError
from syn2real.data.lowlight import DarkenParams, darken, prepare_lowlight
from syn2real.data.unpaired import UnpairedImageDataModule


def _photos(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(40, 230, size=(36 + 4 * i, 48, 3), dtype=np.uint8)
        write_png(root / ("sub" if i % 3 == 0 else "") / f"photo{i}.png", image)
    return root


def test_darken_is_darker_noisy_and_follows_the_tone_curve() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    clean = darken(image, DarkenParams(gamma=2.0, exposure=0.5, photons=0.0, read_noise=0.0), np.random.default_rng(0))
    assert int(clean[0, 0, 0]) == round(0.5 * (128 / 255) ** 2 * 255)
    noisy = darken(image, DarkenParams(gamma=2.0, exposure=0.5, photons=200.0, read_noise=0.005), np.random.default_rng(0))
    assert abs(noisy.mean() - clean.mean()) < 1.5 and noisy.std() > 1.0


def test_prepare_writes_the_layout_disjoint_and_resumes(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "lowlight"
    summary = prepare_lowlight(photos, out, test_fraction=0.25, seed=0)
    names = {d: sorted(p.name for p in (out / d).glob("*.png")) for d in ("train/low", "train/normal", "test/low", "test/reference")}
    assert len(names["test/low"]) == 2 and names["test/low"] == names["test/reference"]
    assert len(names["train/low"]) + len(names["train/normal"]) == 6
    assert not set(names["train/low"]) & set(names["train/normal"]), "unpaired: no scene in both training sets"
    assert not set(names["train/low"] + names["train/normal"]) & set(names["test/low"])
    assert "sub__photo0.png" in sum(names.values(), [])
    assert sum(summary.written.values()) == 10 and summary.kept == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["images"]["test/low/" + names["test/low"][0]]
    assert 2.0 <= entry["gamma"] <= 3.5 and 0.5 <= entry["exposure"] <= 0.9
    low = np.array(Image.open(out / "test/low" / names["test/low"][0]))
    ref = np.array(Image.open(out / "test/reference" / names["test/low"][0]))
    assert low.shape == ref.shape and low.mean() < 0.5 * ref.mean()
    # deterministic, and a second run keeps every file
    before = (out / "test/low" / names["test/low"][0]).read_bytes()
    again = prepare_lowlight(photos, out, test_fraction=0.25, seed=0)
    assert again.written == {} and again.kept == 10
    assert (out / "test/low" / names["test/low"][0]).read_bytes() == before
    shared = prepare_lowlight(photos, tmp_path / "shared", split="shared")
    assert shared.written["train/low"] == shared.written["train/normal"] == 6


def test_prepare_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        prepare_lowlight(tmp_path / "nope", tmp_path / "out")
    _photos(tmp_path / "two", n=2)
    with pytest.raises(DatasetLayoutError, match="need at least 3"):
        prepare_lowlight(tmp_path / "two", tmp_path / "out")
    with pytest.raises(ValueError, match="--gamma"):
        prepare_lowlight(_photos(tmp_path / "p"), tmp_path / "out", gamma=(3.0, 2.0))


def test_data_prep_script_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("data_prep_lowlight", REPO / "data_prep" / "lowlight.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # type: ignore[union-attr]
    photos = _photos(tmp_path / "photos")
    (photos / "bad.png").write_bytes(b"broken")
    code = script.main(["--input", str(photos), "--output", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 1 and "bad.png" in captured.err  # the unreadable photo is named, the rest is written
    assert "written:" in captured.out and (tmp_path / "o" / "manifest.json").is_file()
    assert len(list((tmp_path / "o" / "test" / "reference").glob("*.png"))) == 2


def test_unpaired_datamodule_batches_and_eval_pairs(tmp_path: Path) -> None:
    out = tmp_path / "lowlight"
    prepare_lowlight(_photos(tmp_path / "photos"), out, seed=0)
    dm = UnpairedImageDataModule(root=str(out), crop_size=32, batch_size=2, repeat=3, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))[0]
    assert set(batch) == {"low", "normal"}
    x_low, x_normal = batch["low"][0], batch["normal"][0]
    assert x_low.shape == x_normal.shape == (2, 3, 32, 32)
    assert float(x_low.min()) >= -1 and float(x_low.max()) <= 1
    assert float(x_low.mean()) < float(x_normal.mean())
    assert len(dm.datasets["low"]) == 3 * len(list((out / "train/low").glob("*.png")))
    low, ref = next(iter(dm.val_dataloader()[0]))
    assert low.shape == ref.shape and low.shape[:2] == (1, 3)
    small = UnpairedImageDataModule(root=str(out), eval_max_side=20, num_workers=0)
    small.setup("fit")
    assert max(small.datasets["eval"][0][0].shape[-2:]) == 20


def test_unpaired_datamodule_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="data_prep/lowlight.py"):
        UnpairedImageDataModule(root=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="both"):
        UnpairedImageDataModule(low="a", normal="b", eval_low="c")
    dm = UnpairedImageDataModule(low=str(tmp_path / "low"), normal=str(tmp_path))
    with pytest.raises(DatasetLayoutError, match="data.low folder"):
        dm.setup("fit")
    write_png(tmp_path / "el" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "er" / "b.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "low" / "a.png", np.zeros((8, 8, 3), np.uint8))
    dm = UnpairedImageDataModule(low=str(tmp_path / "low"), normal=str(tmp_path / "low"),
                                 eval_low=str(tmp_path / "el"), eval_reference=str(tmp_path / "er"))
    with pytest.raises(DatasetLayoutError, match="no reference of the same name"):
        dm.setup("fit")
    write_png(tmp_path / "er" / "a.png", np.zeros((6, 8, 3), np.uint8))
    from syn2real.data.unpaired import PairedFolderDataset

    with pytest.raises(DatasetLayoutError, match="same size"):
        PairedFolderDataset(tmp_path / "el", tmp_path / "er")[0]
    assert torch.is_tensor(PairedFolderDataset(tmp_path / "low", tmp_path / "el")[0][0])


@pytest.mark.parametrize("workers", [0, 2])
def test_random_crops_are_reproducible_under_a_seed(tmp_path: Path, workers: int) -> None:
    """albumentations draws from its own generator: the pipelines are seeded from the run's seed, and loader
    workers get distinct seeds derived from torch's (seeded) per-worker seeds."""
    import lightning as L

    out = tmp_path / "lowlight"
    prepare_lowlight(_photos(tmp_path / "photos"), out, seed=0)

    def first_batches(seed: int) -> list[torch.Tensor]:
        L.seed_everything(seed, workers=True)
        dm = UnpairedImageDataModule(root=str(out), crop_size=16, batch_size=2, repeat=4, num_workers=workers)
        dm.setup("fit")
        return [b[0]["low"][0] for _, b in zip(range(3), iter(dm.train_dataloader()))]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    if workers:  # two workers must not crop alike: batches 0 and 1 come from different workers
        assert not torch.equal(a[0], a[1])


def test_collects_the_real_photos_that_packages_ship(tmp_path: Path) -> None:
    from syn2real.data.lowlight import collect_package_photos

    files = collect_package_photos(tmp_path / "photos")
    assert len(files) == 24 and all(f.is_file() for f in files)  # 4 scikit-image photos + 20 foolbox ImageNet samples
    assert np.array(Image.open(tmp_path / "photos" / "skimage_astronaut.png")).shape == (512, 512, 3)
    stamp = files[0].stat().st_mtime_ns
    assert collect_package_photos(tmp_path / "photos") == files and files[0].stat().st_mtime_ns == stamp
