"""The robustness report card: corruptions (deterministic, cached, size- and channel-preserving), the evaluation
loop on a toy model, the normalisation lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from syn2real.robustness import (
    corrupt_batch,
    evaluate_robustness,
    normalization_of,
    report_rows,
)


def pixels(n: int = 3, size: int = 28, channels: int = 1) -> np.ndarray:
    return (np.random.default_rng(0).random((n, size, size, channels)) * 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_corruptions_keep_shape_and_channels_and_are_seeded(channels: int) -> None:
    px = pixels(channels=channels)
    a = corrupt_batch(px, "gaussian_noise", [1, 5], seed=0, cache=False)
    b = corrupt_batch(px, "gaussian_noise", [1, 5], seed=0, cache=False)
    c = corrupt_batch(px, "gaussian_noise", [1, 5], seed=1, cache=False)
    assert set(a) == {1, 5} and a[1].shape == px.shape and a[1].dtype == np.uint8
    assert np.array_equal(a[5], b[5]) and not np.array_equal(a[5], c[5])
    # severity 5 moves the images further than severity 1
    dist = {s: np.abs(a[s].astype(float) - px).mean() for s in (1, 5)}
    assert dist[5] > dist[1] > 0


def test_corruptions_are_cached_by_content(monkeypatch) -> None:
    px = pixels()
    first = corrupt_batch(px, "contrast", [2])
    import syn2real.robustness as rb

    monkeypatch.setattr(rb, "_corrupt_one", lambda *a: (_ for _ in ()).throw(AssertionError("not cached")))
    again = corrupt_batch(px, "contrast", [2])
    assert np.array_equal(first[2], again[2])
    with pytest.raises(AssertionError, match="not cached"):
        corrupt_batch(px[:2], "contrast", [2])  # other images: recomputed


def test_normalization_lookup_and_its_error() -> None:
    assert normalization_of([{"name": "Resize", "height": 8, "width": 8},
                             {"name": "Normalize", "mean": [0.5], "std": [0.25]}]) == ((0.5,), (0.25,))
    with pytest.raises(ValueError, match="no Normalize"):
        normalization_of([{"name": "Resize", "height": 8, "width": 8}])


class Threshold(nn.Module):
    """Class 1 iff the mean pixel (in [0, 1]) is above 0.5: easy to reason about under attacks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x * 0.5 + 0.5).mean(dim=(1, 2, 3))
        return torch.stack([-(m - 0.5) * 40, (m - 0.5) * 40], dim=1)


def test_card_on_a_toy_model(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    level = torch.tensor([0.3, 0.7, 0.45, 0.55] * 4)
    pix = (level.view(-1, 1, 1, 1) + 0.01 * torch.randn(16, 1, 28, 28, generator=g)).clamp(0, 1)
    x, y = (pix - 0.5) / 0.5, (level > 0.5).long()
    report = evaluate_robustness(
        Threshold(), [(x[:8], y[:8]), (x[8:], y[8:])], (0.5,), (0.5,), eps=(0.01, 0.3), pgd_steps=5,
        corruptions=("contrast",), severities=(5,), noise=(0.1,), diagram=tmp_path / "rel.png", progress=False,
    )
    assert report["n_images"] == 16 and report["clean"]["acc"] == 1.0
    # eps 0.01 flips nothing (margin ≥ 0.05); eps 0.3 flips every image (one step moves the mean by 0.3)
    assert report["fgsm"]["0.01"] == 1.0 and report["pgd"]["acc"]["0.01"] == 1.0
    assert report["fgsm"]["0.3"] == 0.0 and report["pgd"]["acc"]["0.3"] == 0.0
    assert 0 <= report["spatial"]["grid_acc"] <= report["spatial"]["worst_of_10_acc"] <= 1
    assert "contrast" in report["corruptions"]["acc"] and report["calibration"]["n_eval"] == 8
    assert (tmp_path / "rel.png").is_file()
    assert ("PGD-5", "eps 0.3", 0.0) in report_rows(report)


def test_card_runs_every_common_corruption(tmp_path) -> None:
    """The default set (the 15 ImageNet-C types) all run, on gray 28 px digits-sized images, and the report names
    the implementation."""
    from syn2real.robustness import CORRUPTIONS

    level = torch.tensor([0.3, 0.7])
    x = (level.view(-1, 1, 1, 1).expand(2, 1, 28, 28) - 0.5) / 0.5
    report = evaluate_robustness(
        Threshold(), [(x, (level > 0.5).long())], (0.5,), (0.5,), eps=(), max_angle=0, max_shift=0, noise=(),
        severities=(1, 5), progress=False,
    )
    corruptions = report["corruptions"]
    assert len(CORRUPTIONS) == 15 and corruptions["unavailable"] == {}
    assert list(corruptions["acc"]) == list(CORRUPTIONS) and corruptions["implementation"].startswith("syn2real")
    assert corruptions["acc"]["contrast"]["1"] == 1.0  # contrast keeps the mean: the threshold model stays right


def test_card_rejects_segmentation_labels() -> None:
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="classification"):
        evaluate_robustness(Threshold(), [(x, torch.zeros(2, 8, 8, dtype=torch.long))], (0.5,), (0.5,),
                            progress=False)


def test_card_goes_to_wandb_as_tables_and_the_diagram(tmp_path, monkeypatch) -> None:
    import syn2real.loggers as loggers
    from syn2real.robustness import log_wandb

    calls: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, **kwargs) -> None:
            calls.append(("init", kwargs["save_dir"]))

        def log_metrics(self, metrics, step=None) -> None:
            calls.extend(("metric", k) for k in metrics)

        def log_table(self, key, columns, data, step=None) -> None:
            calls.append(("table", key))

        def log_image(self, key, images, step=None) -> None:
            calls.append(("image", key))

        def finalize(self, status) -> None:
            calls.append(("finalize", status))

    monkeypatch.setattr(loggers, "SafeWandbLogger", Recorder)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g) * 2 - 1
    report = evaluate_robustness(Threshold(), [(x, (x.mean(dim=(1, 2, 3)) > 0).long())], (0.5,), (0.5,), eps=(0.1,),
                                 pgd_steps=2, corruptions=("contrast",), severities=(1,), noise=(0.1,),
                                 diagram=tmp_path / "reliability.png", progress=False)
    log_wandb(report, tmp_path, "p", "n")
    assert ("table", "robustness/card") in calls and ("table", "robustness/corruptions") in calls
    assert ("image", "robustness/reliability") in calls and ("metric", "robustness/PGD-2/eps 0.1") in calls
    assert calls[-1] == ("finalize", "success")


@pytest.mark.parametrize("max_images", [None, 8, 5])
def test_progress_bar_ends_full_with_the_steps_actually_done(max_images: int | None, monkeypatch, capsys) -> None:
    import tqdm.auto

    bars: list[tqdm.auto.tqdm] = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    report = evaluate_robustness(Threshold(), batches, (0.5,), (0.5,), eps=(0.1, 0.2), pgd_steps=1, noise=(0.1,),
                                 corruptions=(), max_angle=0, max_shift=0, max_images=max_images, progress=True)
    (bar,) = bars
    steps_per_batch = 1 + 2 + 1  # clean, two eps, noise
    done = 2 if max_images is None else 1
    assert report["n_images"] == (max_images or 16)
    # the old bar counted a batch when the next one was fetched and, with --max_images, stopped at 1 of 2 (50 %)
    assert bar.n == bar.total == done * steps_per_batch
    assert bar.disable  # closed (close() sets it)
    last_drawn = capsys.readouterr().err.strip().split("\r")[-1]
    assert last_drawn.startswith("robustness: 100%") and f" {bar.total}/{bar.total} " in last_drawn


def test_max_images_must_be_positive() -> None:
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        evaluate_robustness(Threshold(), [(x, torch.zeros(2, dtype=torch.long))], (0.5,), (0.5,), max_images=0,
                            progress=False)


def test_max_images_draws_a_seeded_subset_of_a_class_sorted_set() -> None:
    """--max_images N: N items at random (seeded), not the first N, which in a class-sorted set are a few classes."""
    from torch.utils.data import DataLoader, TensorDataset

    from syn2real.robustness import subset_loader

    labels = torch.arange(10).repeat_interleave(50)  # 500 items sorted by class, as MNIST is packaged
    loader = DataLoader(TensorDataset(torch.zeros(500, 1, 2, 2), labels), batch_size=64)
    sub, drawn = subset_loader(loader, 100, seed=3)
    seen = torch.cat([y for _, y in sub])
    assert drawn == {"images": 100, "of": 500, "seed": 3} and seen.numel() == 100 and sub.batch_size == 64
    assert len(seen.unique()) == 10 and bool((seen[1:] >= seen[:-1]).all())  # every class, in dataset order
    again, _ = subset_loader(loader, 100, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), seen)
    assert subset_loader(loader, 500, seed=3) == (loader, None) and subset_loader(loader, None, 0) == (loader, None)
    with pytest.raises(SystemExit, match="max_images must be >= 1"):
        subset_loader(loader, 0, seed=0)
