"""PseudoLabelRounds on a fake module whose predictions are fixed by hand: the portion of each round, the CBST
thresholds and pseudo-labels they give (worked out by hand below), the per-round record, what is logged and written,
the state round trip of a resumed run, and the DDP gather of :func:`predict_probs` (simulated ranks)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from syn2real.callbacks.pseudo_labels import PseudoLabelRounds, RoundConfig, predict_probs
from syn2real.losses.self_training import lrent_soft_labels

# Ten target images, four classes; class 3 is never predicted. Every confidence lies in its own 1/15 bin (so the
# ECE is the mean |correct - confidence|) and away from the bin edges.
PROBS = torch.tensor([
    [0.90, 0.05, 0.03, 0.02],  # 0: pred 0
    [0.83, 0.10, 0.05, 0.02],  # 1: pred 0
    [0.70, 0.20, 0.08, 0.02],  # 2: pred 0
    [0.63, 0.05, 0.30, 0.02],  # 3: pred 0
    [0.50, 0.02, 0.46, 0.02],  # 4: pred 0, but p_2 / k_2 = 0.46 / 0.43 > 1: pseudo-labelled 2
    [0.03, 0.95, 0.01, 0.01],  # 5: pred 1
    [0.30, 0.56, 0.12, 0.02],  # 6: pred 1
    [0.20, 0.77, 0.02, 0.01],  # 7: pred 1
    [0.25, 0.05, 0.43, 0.27],  # 8: pred 2
    [0.30, 0.06, 0.37, 0.27],  # 9: pred 2
])
TARGETS = [0, 1, 1, 2, 2, 1, 0, 1, 2, 3]
INF = math.inf
# Rounds of RoundConfig(portion_start=0.25, portion_step=0.2, portion_cap=0.65): p = 0.25, 0.45, 0.65, 0.65.
# Class counts N = (5, 3, 2, 0), n_c = max(floor(p N_c), 1): p=0.25 -> (1, 1, 1); 0.45 -> (2, 1, 1); 0.65 -> (3, 1, 1).
# k_c = the n_c-th largest confidence of class c: class 0 sorted .90 .83 .70 .63 .50; class 1 .95 .77 .56; class 2
# .43 .37.
CONFIG = RoundConfig(epochs_per_round=2, portion_start=0.25, portion_step=0.2, portion_cap=0.65)
PORTIONS = [0.25, 0.45, 0.65, 0.65]
THRESHOLDS = [
    [0.90, 0.95, 0.43, INF],
    [0.83, 0.95, 0.43, INF],
    [0.70, 0.95, 0.43, INF],
    [0.70, 0.95, 0.43, INF],
]
LABELS = [
    [0, -1, -1, -1, 2, 1, -1, -1, 2, -1],
    [0, 0, -1, -1, 2, 1, -1, -1, 2, -1],
    [0, 0, 0, -1, 2, 1, -1, -1, 2, -1],
    [0, 0, 0, -1, 2, 1, -1, -1, 2, -1],
]
# argmax (0 0 0 0 0 1 1 1 2 2) vs TARGETS: right on items 0, 5, 7, 8
TARGET_ACC = 0.4
ECE = (0.10 + 0.83 + 0.70 + 0.63 + 0.50 + 0.05 + 0.56 + 0.23 + 0.57 + 0.37) / 10


class _Target(Dataset):
    """Items (logits, label) whose softmax is ``PROBS``; ``targets``/``classes`` as the target datasets carry them."""

    def __init__(self, targets: list[int] | None = TARGETS, classes: list[str] | None = None) -> None:
        self.x = PROBS.log()
        if targets is not None:
            self.targets = targets
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], (self.targets[i] if hasattr(self, "targets") else -1)


class _Identity(nn.Module):
    """A "network" that returns its input as logits, with the attributes the callback reads of a method."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.network_cfg = SimpleNamespace(num_classes=num_classes)
        self.logged: list[dict] = []
        self.modes: list[bool] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x

    def log_dict(self, values: dict, **kwargs) -> None:
        self.logged.append(values)


def _trainer(root: Path, dataset: Dataset, epoch: int = 0, rank_zero: bool = True) -> SimpleNamespace:
    dm = SimpleNamespace(datasets={"target_predict": dataset}, eval_batch_size=3)
    return SimpleNamespace(world_size=1, global_rank=0, datamodule=dm, current_epoch=epoch,
                           is_global_zero=rank_zero, default_root_dir=str(root))


def _labels(i: int) -> torch.Tensor:
    return torch.tensor(LABELS[i])


def test_hand_worked_rounds_give_the_portion_thresholds_and_pseudo_labels(tmp_path: Path) -> None:
    data, module = _Target(classes=list("abcd")), _Identity()
    module.train()
    cb = PseudoLabelRounds(CONFIG)
    computed_at = []
    for epoch in range(8):
        before = len(cb.history)
        cb.on_train_epoch_start(_trainer(tmp_path, data, epoch), module)
        if len(cb.history) > before:
            computed_at.append(epoch)
            r = epoch // 2
            assert cb.round_idx == r
            assert cb.thresholds.tolist() == pytest.approx(THRESHOLDS[r], abs=1e-6)
            assert torch.equal(cb.labels, _labels(r)), r
            assert cb.soft_labels is None
    # one round every epochs_per_round epochs, at its first epoch
    assert computed_at == [0, 2, 4, 6]
    assert [h["portion"] for h in cb.history] == PORTIONS
    assert [h["round"] for h in cb.history] == [0, 1, 2, 3]
    assert all(mode is False for mode in module.modes) and module.training, "predicts in eval mode, then restores"


def test_round_record_and_logged_scalars(tmp_path: Path) -> None:
    data, module = _Target(classes=list("abcd")), _Identity()
    cb = PseudoLabelRounds(CONFIG)
    cb.on_train_epoch_start(_trainer(tmp_path, data), module)
    rec = cb.history[0]
    assert rec["classes"] == ["a", "b", "c", "d"]
    assert rec["total"] == 10 and rec["kept"] == 4 and rec["kept_fraction"] == pytest.approx(0.4)
    assert rec["predicted_per_class"] == [5, 3, 2, 0]
    assert rec["kept_per_class"] == [1, 1, 2, 0]
    assert rec["thresholds"][:3] == pytest.approx([0.90, 0.95, 0.43], abs=1e-6) and rec["thresholds"][3] == INF
    # kept items 0, 4, 5, 8 carry the target class (item 4 only thanks to p_c / k_c)
    assert rec["pseudo_label_acc"] == 1.0
    assert rec["pseudo_label_acc_per_class"] == [1.0, 1.0, 1.0, None]
    assert rec["target_acc"] == pytest.approx(TARGET_ACC)
    assert rec["target_ece"] == pytest.approx(ECE, abs=1e-6)

    (logged,) = module.logged
    assert logged == pytest.approx({
        "self_training/round": 0.0,
        "self_training/portion": 0.25,
        "self_training/total": 10.0,
        "self_training/kept": 4.0,
        "self_training/kept_fraction": 0.4,
        "self_training/pseudo_label_acc": 1.0,
        "self_training/target_acc": TARGET_ACC,
        "self_training/target_ece": ECE,
        "self_training/kept_fraction/a": 1 / 5,
        "self_training/kept_fraction/b": 1 / 3,
        "self_training/kept_fraction/c": 2 / 2,
        "self_training/kept_fraction/d": 0.0,  # never predicted: 0, not a division by zero
    }, abs=1e-6)

    # the next round: item 1 (target 1) joins class 0, so the pseudo-labels' accuracy drops to 4/5
    cb.on_train_epoch_start(_trainer(tmp_path, data, epoch=2), module)
    rec = cb.history[1]
    assert rec["kept"] == 5 and rec["kept_per_class"] == [2, 1, 2, 0]
    assert rec["pseudo_label_acc"] == pytest.approx(0.8)
    assert rec["pseudo_label_acc_per_class"] == [0.5, 1.0, 1.0, None]


def test_file_holds_every_round_and_only_rank_zero_writes_it(tmp_path: Path) -> None:
    data = _Target()
    cb = PseudoLabelRounds(CONFIG)
    for epoch in (0, 2, 4):
        cb.on_train_epoch_start(_trainer(tmp_path, data, epoch), _Identity())
    written = json.loads((tmp_path / "self_training_rounds.json").read_text())
    assert list(written) == ["rounds"]
    assert written["rounds"] == cb.history
    assert [r["kept"] for r in written["rounds"]] == [4, 5, 6]
    assert written["rounds"][2]["thresholds"][3] == INF
    assert written["rounds"][0]["classes"] == ["0", "1", "2", "3"]  # no class names: the indices

    other = tmp_path / "rank1"
    cb1 = PseudoLabelRounds(RoundConfig(filename="rounds.json"))
    cb1.on_train_epoch_start(_trainer(other, data, rank_zero=False), _Identity())
    assert cb1.labels is not None and not other.exists()
    cb1.on_train_epoch_start(_trainer(other, data, epoch=2, rank_zero=True), _Identity())
    assert json.loads((other / "rounds.json").read_text())["rounds"][-1]["round"] == 1


@pytest.mark.parametrize("targets", [None, [0, 1, 1, 2, 2, 1, 0, 1, 2, -1]], ids=["no_targets", "unlabelled"])
def test_without_evaluation_labels_nothing_is_measured(tmp_path: Path, targets: list[int] | None) -> None:
    module = _Identity()
    cb = PseudoLabelRounds(CONFIG)
    cb.on_train_epoch_start(_trainer(tmp_path, _Target(targets)), module)
    rec = cb.history[0]
    assert torch.equal(cb.labels, _labels(0))
    assert rec["pseudo_label_acc"] is None and rec["target_acc"] is None and rec["target_ece"] is None
    assert "pseudo_label_acc_per_class" not in rec
    assert not any(k.endswith(("_acc", "_ece")) for k in module.logged[0])


def test_histogram_thresholds_are_the_lower_bin_edges(tmp_path: Path) -> None:
    cb = PseudoLabelRounds(RoundConfig(portion_start=0.25, thresholds="histogram", bins=16))
    cb.on_train_epoch_start(_trainer(tmp_path, _Target()), _Identity())
    # bins of 1/16: .90 in [14/16, 15/16), .95 in [15/16, 1), .43 in [6/16, 7/16)
    assert cb.thresholds.tolist() == [14 / 16, 15 / 16, 6 / 16, INF]
    # looser than the exact thresholds, yet here no further item reaches 1 (item 9: .37 / .375 < 1)
    assert torch.equal(cb.labels, _labels(0))


def test_soft_labels_are_lrent_of_the_round(tmp_path: Path) -> None:
    cb = PseudoLabelRounds(CONFIG, soft=True, lrent_alpha=0.5)
    cb.on_train_epoch_start(_trainer(tmp_path, _Target()), _Identity())
    probs = PROBS.log().softmax(1)
    assert torch.allclose(cb.soft_labels, lrent_soft_labels(probs, cb.thresholds, 0.5))
    # item 0 by hand: (p_c / k_c)^(1/alpha) = (1, (.05/.95)^2, (.03/.43)^2, 0), normalised
    row = torch.tensor([1.0, (0.05 / 0.95) ** 2, (0.03 / 0.43) ** 2, 0.0])
    assert torch.allclose(cb.soft_labels[0], row / row.sum(), atol=1e-5)
    assert torch.allclose(cb.soft_labels.sum(1), torch.ones(10))


def test_state_dict_round_trip_resumes_inside_a_round_and_continues_after_it(tmp_path: Path) -> None:
    data = _Target()
    cb = PseudoLabelRounds(CONFIG, soft=True)
    cb.on_train_epoch_start(_trainer(tmp_path, data, epoch=0), _Identity())
    cb.on_train_epoch_start(_trainer(tmp_path, data, epoch=2), _Identity())
    path = tmp_path / "callback_state.pt"
    torch.save(cb.state_dict(), path)
    state = torch.load(path, weights_only=True)  # plain tensors and values: loads without pickled objects

    restored = PseudoLabelRounds(CONFIG, soft=True)
    restored.load_state_dict(state)
    assert restored.round_idx == 1
    assert torch.equal(restored.labels, cb.labels) and torch.equal(restored.labels, _labels(1))
    assert torch.equal(restored.soft_labels, cb.soft_labels) and torch.equal(restored.thresholds, cb.thresholds)
    assert restored.history == cb.history

    # epoch 3 is still round 1: the restored pseudo-labels are used as they are
    restored.compute_round = None  # type: ignore[assignment]  # calling it would fail
    restored.on_train_epoch_start(_trainer(tmp_path, data, epoch=3), _Identity())
    del restored.compute_round
    # epoch 4 starts round 2: computed afresh, appended to the restored history, and the file holds all three
    restored.on_train_epoch_start(_trainer(tmp_path, data, epoch=4), _Identity())
    assert restored.round_idx == 2 and torch.equal(restored.labels, _labels(2))
    assert [h["round"] for h in restored.history] == [0, 1, 2]
    assert len(json.loads((tmp_path / "self_training_rounds.json").read_text())["rounds"]) == 3

    empty = PseudoLabelRounds().state_dict()
    assert empty == {"round_idx": None, "labels": None, "soft_labels": None, "thresholds": None, "history": []}
    fresh = PseudoLabelRounds()
    fresh.load_state_dict({})
    assert fresh.round_idx is None and fresh.labels is None and fresh.history == []


def test_a_resumed_run_past_its_round_recomputes(tmp_path: Path) -> None:
    data = _Target()
    cb = PseudoLabelRounds(CONFIG)
    cb.on_train_epoch_start(_trainer(tmp_path, data, epoch=0), _Identity())
    restored = PseudoLabelRounds(CONFIG)
    restored.load_state_dict(cb.state_dict())
    restored.on_train_epoch_start(_trainer(tmp_path, data, epoch=5), _Identity())  # round 2
    assert restored.round_idx == 2 and torch.equal(restored.labels, _labels(2))
    assert [h["portion"] for h in restored.history] == [0.25, 0.65]


def test_bad_schedule_and_missing_dataset_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs_per_round must be >= 1, got 0"):
        PseudoLabelRounds(RoundConfig(epochs_per_round=0))
    trainer = _trainer(tmp_path, _Target())
    trainer.datamodule.datasets = {"target_train": _Target()}
    with pytest.raises(RuntimeError, match=r"target_predict.*got datasets \['target_train'\]"):
        PseudoLabelRounds().on_train_epoch_start(trainer, _Identity())


@pytest.mark.parametrize("world", [2, 3])
def test_predict_probs_gathers_rank_shards_back_into_dataset_order(tmp_path: Path, world: int) -> None:
    """Rank r predicts items r, r+W, ...; shards are padded to ceil(N/W) rows and all-gathered. The other ranks'
    shards are simulated here from the known probabilities."""
    data, module = _Target(), _Identity()
    probs = PROBS.log().softmax(1)
    n, per_rank = len(data), math.ceil(len(data) / world)

    def shard(r: int) -> torch.Tensor:
        out = torch.zeros(per_rank, 4)
        rows = probs[r::world]
        out[: len(rows)] = rows
        return out

    for rank in range(world):
        def all_gather(local: torch.Tensor, rank: int = rank) -> torch.Tensor:
            assert local.shape == (per_rank, 4)
            assert torch.allclose(local, shard(rank), atol=1e-7), "this rank predicted its own items only"
            return torch.stack([local if r == rank else shard(r) for r in range(world)])

        trainer = SimpleNamespace(world_size=world, global_rank=rank, strategy=SimpleNamespace(all_gather=all_gather))
        out = predict_probs(trainer, module, data, batch_size=2)
        assert out.shape == (n, 4)
        assert torch.allclose(out, probs, atol=1e-7), rank
