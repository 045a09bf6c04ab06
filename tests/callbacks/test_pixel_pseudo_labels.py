"""Pixel self-training rounds: histogram thresholds on (N, C, H, W) maps against the exact sort, and one round of
:class:`PixelPseudoLabelRounds` (two streamed passes, PNGs, the round record) against a direct computation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from syn2real.callbacks.pixel_pseudo_labels import PixelPseudoLabelRounds, write_label_png
from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.losses.self_training import (
    class_balanced_thresholds,
    class_balanced_thresholds_from_histogram,
    confidence_histogram,
    pseudo_labels,
)


def bin_edge_probs(n: int, c: int, h: int, w: int, bins: int, seed: int) -> torch.Tensor:
    """(N, C, H, W) probabilities whose per-pixel maximum is a multiple of 1/bins (exact in float32), the rest split
    unevenly over the other classes; the winning class is random."""
    gen = torch.Generator().manual_seed(seed)
    pixels = n * h * w
    q = torch.randint(bins // 2 + 8, bins, (pixels,), generator=gen).double() / bins
    rest = torch.rand(pixels, c - 1, generator=gen).double() + 0.1
    rest = rest / rest.sum(1, keepdim=True) * (1 - q).unsqueeze(1)
    rows = torch.cat([q.unsqueeze(1), rest], dim=1)
    perm = torch.argsort(torch.rand(pixels, c, generator=gen), dim=1)
    rows = torch.empty_like(rows).scatter_(1, perm, rows)
    return rows.float().reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("portion", [0.2, 0.5, 1.0])
def test_pixel_histogram_thresholds_equal_the_exact_sort_on_bin_edges(portion: float) -> None:
    bins = 1024
    probs = bin_edge_probs(3, 5, 8, 12, bins, seed=0)
    assert torch.equal(probs.max(1).values * bins, (probs.max(1).values * bins).round())
    exact = class_balanced_thresholds(probs, portion)
    hist = class_balanced_thresholds_from_histogram(confidence_histogram(probs, bins), portion)
    assert torch.equal(hist, exact)
    assert torch.equal(pseudo_labels(probs, hist, 255), pseudo_labels(probs, exact, 255))


def test_pixel_histogram_thresholds_within_one_bin_on_random_probs() -> None:
    torch.manual_seed(0)
    bins = 100
    probs = (3 * torch.randn(4, 6, 16, 16)).softmax(1)
    for portion in (0.1, 0.3, 0.6):
        exact = class_balanced_thresholds(probs, portion).double()
        hist = class_balanced_thresholds_from_histogram(confidence_histogram(probs, bins), portion).double()
        finite = torch.isfinite(exact)
        assert torch.equal(finite, torch.isfinite(hist))
        assert (hist[finite] <= exact[finite]).all()
        assert (exact[finite] < hist[finite] + 1.0 / bins).all()
        # never stricter: every pixel kept by the exact thresholds is kept by the histogram ones
        kept_exact = pseudo_labels(probs, exact.float(), 255) != 255
        kept_hist = pseudo_labels(probs, hist.float(), 255) != 255
        assert bool((kept_hist | ~kept_exact).all())


def test_write_label_png_round_trip_leaves_no_temp_file(tmp_path: Path) -> None:
    label = np.array([[0, 1, 255], [18, 3, 255]], dtype=np.uint8)
    path = tmp_path / "pl" / "000007.png"
    write_label_png(label, path)
    with Image.open(path) as img:
        assert img.mode == "L"
        assert np.array_equal(np.array(img), label)
    assert [p.name for p in path.parent.iterdir()] == ["000007.png"]


# ------------------------------------------------------------------------------------------------ one round


class _Images(Dataset):
    """Random images with labels, items (x, y, index) as the target prediction set yields them."""

    def __init__(self, n: int, num_classes: int) -> None:
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, 6, 10, generator=gen)
        self.y = torch.randint(0, num_classes, (n, 6, 10), generator=gen)
        self.y[:, 0] = 255
        self.pseudo_label_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i

    def pseudo_label_path(self, index: int) -> Path:
        return Path(self.pseudo_label_dir or ".") / f"{index:06d}.png"


class _Module(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Conv2d(3, num_classes, 3, padding=1)
        self.network_cfg = SimpleNamespace(num_classes=num_classes)
        self.task = SimpleNamespace(inference=None)
        self.logged: list[dict] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def log_dict(self, values: dict, **kwargs) -> None:
        self.logged.append(values)


def _trainer(root: Path, dataset: Dataset, classes: list[str]) -> SimpleNamespace:
    datamodule = SimpleNamespace(datasets={"target_predict": dataset, "target_train": dataset}, eval_batch_size=2,
                                 classes=classes)
    strategy = SimpleNamespace(barrier=lambda name=None: None, reduce=None)
    return SimpleNamespace(datamodule=datamodule, global_rank=0, world_size=1, default_root_dir=str(root),
                           strategy=strategy, is_global_zero=True, current_epoch=0)


def test_one_round_writes_the_directly_computed_pseudo_labels(tmp_path: Path) -> None:
    num_classes, bins = 4, 1000
    dataset = _Images(5, num_classes)
    module = _Module(num_classes)
    module.train()
    trainer = _trainer(tmp_path, dataset, ["a", "b", "c", "d"])
    callback = PixelPseudoLabelRounds(RoundConfig(bins=bins, portion_start=0.3))
    callback.setup(trainer, module, "fit")
    assert dataset.pseudo_label_dir == tmp_path / "pseudo_labels"
    callback.on_fit_start(trainer, module)
    assert module.training, "the round restores train mode"

    with torch.no_grad():
        probs = module.model(dataset.x).softmax(1)
    thresholds = class_balanced_thresholds_from_histogram(confidence_histogram(probs, bins), 0.3)
    expected = pseudo_labels(probs, thresholds, 255)
    assert torch.equal(callback.thresholds, thresholds)
    for i in range(len(dataset)):
        with Image.open(tmp_path / "pseudo_labels" / f"{i:06d}.png") as img:
            assert np.array_equal(np.array(img), expected[i].numpy().astype(np.uint8)), i

    record = json.loads((tmp_path / "self_training_rounds.json").read_text())["rounds"][0]
    kept = expected != 255
    assert record["round"] == 0 and record["portion"] == 0.3 and record["classes"] == ["a", "b", "c", "d"]
    assert record["pixels"] == expected.numel() and record["kept"] == int(kept.sum())
    known = kept & (dataset.y != 255)
    assert record["pseudo_label_acc"] == pytest.approx(float((expected[known] == dataset.y[known]).double().mean()))
    # logged at the first epoch start (logging is not allowed in on_fit_start), then not again
    assert module.logged == []
    callback.on_train_epoch_start(trainer, module)
    assert module.logged and module.logged[0]["self_training/kept"] == record["kept"]
    # a resumed callback keeps its round and does not recompute
    state = callback.state_dict()
    restored = PixelPseudoLabelRounds(RoundConfig(bins=bins))
    restored.load_state_dict(state)
    assert restored.round_idx == 0 and torch.equal(restored.thresholds, thresholds)


def test_bad_round_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs_per_round and bins must be >= 1"):
        PixelPseudoLabelRounds(RoundConfig(bins=0))
    # fewer bins than classes: a confidence of ~1/C lands in bin 0 and would give the threshold 0
    dataset = _Images(2, 4)
    with pytest.raises(ValueError, match=r"rounds.bins \(3\) must be at least the number of classes \(4\)"):
        PixelPseudoLabelRounds(RoundConfig(bins=3)).compute_round(_trainer(tmp_path, dataset, list("abcd")),
                                                                      _Module(4), 0)
