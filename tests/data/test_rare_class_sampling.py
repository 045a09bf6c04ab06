"""Rare-class sampling (DAFormer §3.3): p(c) by hand, the per-image thresholds, empirical class frequencies, crops
that keep the sampled class, determinism for any number of workers, mid-pass resume, DDP ranks, and the option off
leaving today's order untouched."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_png

from syn2real.data.class_stats import write_class_stats
from syn2real.data.datasets import DatasetLayoutError
from syn2real.data.rare_class import RareClassPlan, RareClassSampler, RareClassSampling, rare_class_probabilities
from syn2real.data.resumable import ResumableSampler
from syn2real.data.segmentation import SegDomainSpec, SegmentationDataModule

CLASSES = ["road", "car", "bike", "train"]  # "train" never appears in the source
CROP = [{"name": "RandomCrop", "height": 8, "width": 8}]


def rcs_tree(root: Path, n: int = 8, size: int = 16) -> Path:
    """``n`` 16x16 images: road everywhere, a 6x6 car in the first half, a 3x3 bike (the rare class) only in the
    last image, a 255 border pixel; class statistics beside the list."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        if i < n // 2:
            y, x = rng.integers(0, size - 6, 2)
            label[y:y + 6, x:x + 6] = 1
        if i == n - 1:
            label[12:15, 1:4] = 2  # bottom left: most 8x8 crops miss it
        label[0, 0] = 255
        write_png(root / "images" / f"{i}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        write_png(root / "labels" / f"{i}.png", label)
        lines.append(f"images/{i}.png labels/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    write_class_stats(root / "train.txt")
    return root / "train.txt"


def datamodule(list_file: Path, rcs: RareClassSampling | None, **kwargs) -> SegmentationDataModule:
    dm = SegmentationDataModule(
        source=SegDomainSpec(str(list_file)), target=SegDomainSpec(str(list_file), labelled=False),
        batch_size=kwargs.pop("batch_size", 2), num_workers=kwargs.pop("num_workers", 0), train_transforms=CROP,
        rare_class_sampling=rcs, **kwargs)
    dm.setup("fit")
    return dm


def source_batches(dm: SegmentationDataModule, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = dm.train_dataloader().iterables["source"]
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_probabilities_by_hand() -> None:
    # p(c) ∝ exp((1 - f_c)/T), T = 0.1: exp(5), exp(7), exp(8) over their sum 4226.004; an absent class gets 0
    p = rare_class_probabilities([0.5, 0.3, 0.2, 0.0], temperature=0.1)
    assert p == pytest.approx([0.035119, 0.259496, 0.705385, 0.0], abs=1e-6)
    weights = [math.exp((1 - f) / 0.1) for f in (0.5, 0.3, 0.2)]
    assert p[:3] == pytest.approx([w / sum(weights) for w in weights], rel=1e-12)
    # DAFormer's T = 0.01: exponents up to 100 stay finite; the rarest class dominates
    q = rare_class_probabilities([0.97, 0.02, 0.01], temperature=0.01)
    assert np.isfinite(q).all() and q.sum() == pytest.approx(1.0) and q.argmax() == 2


def test_thresholds_capped_by_image_size_and_by_what_exists() -> None:
    counts = [{0: 5000, 1: 3500}, {0: 6000, 1: 2000, 2: 40}, {0: 7900, 2: 10}]
    pixels = [10_000, 10_000, 8_000]
    # 1 % of the image caps min_pixels at 100 / 100 / 80; class 2 holds at most 40 anywhere: its threshold is 40
    plan = RareClassPlan.build(counts, pixels, 4, RareClassSampling(min_pixels=3000, min_crop_ratio=0.5))
    assert [h.tolist() for h in plan.holders] == [[0, 1, 2], [0, 1], [1], []]
    assert [c.tolist() for c in plan.crop_pixels] == [[50, 50, 40], [50, 50], [20], []]
    # a large cap: min_pixels itself decides (DAFormer's rule at GTA5's resolution)
    plan = RareClassPlan.build(counts, pixels, 4, RareClassSampling(min_pixels=3000, max_image_fraction=1.0))
    assert [h.tolist() for h in plan.holders] == [[0, 1, 2], [0], [1], []]
    assert plan.crop_pixels[1].tolist() == [1500]
    assert plan.probabilities[3] == 0.0 and plan.frequency.sum() == pytest.approx(1.0)


def test_empirical_class_frequency_matches_p() -> None:
    counts = [{0: 900, 1: 100}, {0: 600, 2: 300, 1: 50}, {0: 500, 3: 20}]
    plan = RareClassPlan.build(counts, [1000, 1000, 1000], 4, RareClassSampling(temperature=0.3))
    classes, images, _ = plan.draw(np.random.default_rng(0), 20_000)
    empirical = np.bincount(classes, minlength=4) / 20_000
    assert empirical == pytest.approx(plan.probabilities, abs=0.01)
    for c in range(4):  # every drawn image holds its class
        assert all(counts[i].get(c, 0) > 0 for i in images[classes == c])


def test_sampled_crop_contains_the_sampled_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the run's seed (which an earlier test's seed_everything may have exported) fixes the items' crop seeds
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    # max_image_fraction 1: min_pixels (9) itself is the threshold (the default 1 % of 256 pixels would make it 3).
    # About 1 in 9 random 8x8 crops keeps 5 of the bike's 9 pixels: 100 retries make a miss (~1e-5 per item)
    # negligible, where DAFormer's 10 would miss ~30 % of the time on this tiny image.
    cfg = RareClassSampling(temperature=0.01, min_pixels=9, min_crop_ratio=0.5, max_image_fraction=1.0,
                            crop_retries=100)
    dm = datamodule(rcs_tree(tmp_path), cfg, batch_size=1)
    assert dm.rare_class_plan.crop_pixels[2].tolist() == [5]
    sampler = dm.train_dataloader().iterables["source"].sampler
    assert isinstance(sampler, RareClassSampler)
    probs = dm.rare_class_probabilities
    assert list(probs) == CLASSES and probs["train"] == 0.0 and probs["bike"] > 0.99
    keys = list(sampler)
    assert len(keys) == 8 and all(c == 2 and i == 7 for i, _, c, _ in keys)  # the bike, only in image 7
    dataset = dm.train_dataloader().iterables["source"].dataset
    kept = [int((dataset[key][1] == 2).sum()) for key in keys]
    assert all(k >= 5 for k in kept), kept  # ceil(0.5 * 9) pixels of the bike in every crop
    # without the retries most 8x8 crops of that image miss the bike
    plain = [int((dataset[(i, s, c, 0)][1] == 2).sum()) for i, s, c, _ in keys]
    assert sum(p >= 5 for p in plain) < len(plain)


def test_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    list_file = rcs_tree(tmp_path)
    cfg = RareClassSampling(temperature=0.5, min_pixels=9)
    runs = [source_batches(datamodule(list_file, cfg, num_workers=w), epoch=1) for w in (0, 0, 2)]
    for other in runs[1:]:
        assert len(other) == len(runs[0]) == 4
        for (x0, y0), (x1, y1) in zip(runs[0], other):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
    other_epoch = source_batches(datamodule(list_file, cfg), epoch=2)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(runs[0], other_epoch))


def test_resume_mid_pass_and_ddp_ranks(tmp_path: Path) -> None:
    list_file = rcs_tree(tmp_path)
    dm = datamodule(list_file, RareClassSampling(temperature=0.5, min_pixels=9))
    plan, dataset = dm.rare_class_plan, dm.datasets["source_train"]
    whole = list(RareClassSampler(dataset, 1, 0, 7, False, plan))
    resumed = RareClassSampler(dataset, 1, 0, 7, False, plan)
    resumed.resume(epoch=0, pass_index=0, items=3)
    assert list(resumed) == whole[3:]
    ranks = [list(RareClassSampler(dataset, 2, r, 7, False, plan)) for r in (0, 1)]
    assert ranks[0] == whole[0::2] and ranks[1] == whole[1::2]  # 2 ranks of B see one process of 2B
    # the loader's state (what a mid-epoch checkpoint holds) continues with the same batches, crops included
    full = source_batches(datamodule(list_file, RareClassSampling(temperature=0.5, min_pixels=9)))
    loader = datamodule(list_file, RareClassSampling(temperature=0.5, min_pixels=9)).train_dataloader().iterables[
        "source"]
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    assert state == {"epoch": 0, "pass": 0, "items": 2}
    again = datamodule(list_file, RareClassSampling(temperature=0.5, min_pixels=9)).train_dataloader().iterables[
        "source"]
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == len(full) - 1
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, full[1:]))


def test_option_off_keeps_todays_order(tmp_path: Path) -> None:
    dm = datamodule(rcs_tree(tmp_path), None)
    assert dm.rare_class_probabilities is None and dm.rare_class_plan is None
    loader = dm.train_dataloader().iterables["source"]
    assert type(loader.sampler) is ResumableSampler
    reference = ResumableSampler(dm.datasets["source_train"], 1, 0, True, 0, True)
    assert list(loader.sampler) == list(reference)


def test_held_out_source_split_and_errors(tmp_path: Path) -> None:
    list_file = rcs_tree(tmp_path)
    cfg = RareClassSampling(temperature=0.01, min_pixels=9)
    dm = datamodule(list_file, cfg, source_val_fraction=0.25, split_seed=0)
    train = dm.datasets["source_train"]
    assert len(train) == 6 and len(dm.datasets["source_val"]) == 2
    held = {p.name for p in dm.datasets["source_val"].labels}
    # the statistics follow the training subset: without image 7 the bike is absent
    assert (dm.rare_class_probabilities["bike"] == 0.0) == ("7.png" in held)
    with pytest.raises(ValueError, match="rare_class_sampling.temperature must be > 0"):
        RareClassSampling(temperature=0)
    with pytest.raises(ValueError, match="rare_class_sampling.min_crop_ratio"):
        RareClassSampling(min_crop_ratio=2)
    (tmp_path / "train_class_stats.json").unlink()
    with pytest.raises(DatasetLayoutError, match="class_stats.py --list"):
        datamodule(list_file, cfg)
