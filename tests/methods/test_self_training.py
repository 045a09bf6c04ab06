"""Self-training: the round callback (predictions in dataset order, CBST pseudo-labels, per-round record, resume
state) and the CBST / CRST-MRKLD / CRST-LRENT losses of :class:`SelfTraining`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from round_fixtures import NET, Digits, fake_trainer

from syn2real.callbacks.pseudo_labels import (
    PseudoLabelRounds,
    RoundConfig,
    predict_probs,
)
from syn2real.losses.self_training import (
    class_balanced_thresholds,
    lrent_soft_labels,
    pseudo_labels,
)
from syn2real.methods import SelfTraining, SourceOnly
from syn2real.tasks import Classification


def module() -> SelfTraining:
    torch.manual_seed(0)
    m = SelfTraining(task=Classification(network=NET), rounds=RoundConfig(epochs_per_round=2))
    m.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
    return m


def test_predict_probs_in_dataset_order_and_restores_train_mode(tmp_path: Path) -> None:
    data, m = Digits(), module()
    m.train()
    probs = predict_probs(fake_trainer(tmp_path, data), m, data, batch_size=8)
    m.eval()
    with torch.no_grad():
        expected = m(data.x).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert probs.shape == (37, 10)


def test_round_gives_cbst_pseudo_labels_and_records_statistics(tmp_path: Path) -> None:
    data, m = Digits(), module()
    trainer = fake_trainer(tmp_path, data)
    m.rounds.on_train_epoch_start(trainer, m)
    m.eval()
    with torch.no_grad():
        probs = m(data.x).softmax(1)
    k = class_balanced_thresholds(probs, 0.2)
    assert torch.equal(m.rounds.labels, pseudo_labels(probs, k))
    rec = m.rounds.history[0]
    assert rec["round"] == 0 and rec["portion"] == 0.2 and rec["total"] == 37
    assert rec["kept"] == int((m.rounds.labels >= 0).sum()) == sum(rec["kept_per_class"])
    targets = torch.tensor(data.targets)
    kept = m.rounds.labels >= 0
    assert rec["pseudo_label_acc"] == pytest.approx(float((m.rounds.labels[kept] == targets[kept]).float().mean()))
    assert 0.0 <= rec["target_ece"] <= 1.0
    assert (tmp_path / "self_training_rounds.json").is_file()

    # same round on the next epoch: nothing recomputed; a new round raises the portion
    m.rounds.on_train_epoch_start(fake_trainer(tmp_path, data, epoch=1), m)
    assert len(m.rounds.history) == 1
    m.rounds.on_train_epoch_start(fake_trainer(tmp_path, data, epoch=2), m)
    assert [r["portion"] for r in m.rounds.history] == [0.2, 0.25]
    assert m.rounds.history[1]["kept"] >= rec["kept"]


def test_histogram_thresholds_give_the_same_round_as_exact_ones_here(tmp_path: Path) -> None:
    data = Digits()
    a, b = module(), module()
    b.rounds.cfg = RoundConfig(thresholds="histogram", bins=100000)
    a.rounds.on_train_epoch_start(fake_trainer(tmp_path, data), a)
    b.rounds.on_train_epoch_start(fake_trainer(tmp_path, data), b)
    assert torch.equal(a.rounds.labels, b.rounds.labels)


def test_round_state_survives_a_checkpoint(tmp_path: Path) -> None:
    data, m = Digits(), module()
    m.rounds.on_train_epoch_start(fake_trainer(tmp_path, data), m)
    path = tmp_path / "state.pt"
    torch.save(m.rounds.state_dict(), path)
    restored = PseudoLabelRounds(RoundConfig(epochs_per_round=2))
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(restored.labels, m.rounds.labels) and restored.round_idx == 0
    assert restored.history == m.rounds.history
    # resumed at epoch 1 of round 0: the restored pseudo-labels are kept, not recomputed
    restored.compute_round = None  # type: ignore[assignment]  # would fail if called
    restored.on_train_epoch_start(fake_trainer(tmp_path, data, epoch=1), m)


def _batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(3)
    xs, xt = torch.randn(n, 1, 28, 28, generator=g), torch.randn(n, 1, 28, 28, generator=g)
    return {"source": (xs, torch.randint(0, 10, (n,), generator=g)),
            "target": (xt, torch.full((n,), 7), torch.tensor([0, 1, 2, 3, 4, 5]))}


@pytest.mark.parametrize("variant", ["cbst", "mrkld", "lrent"])
def test_losses_use_only_pseudo_labelled_targets(variant: str) -> None:
    torch.manual_seed(0)
    m = SelfTraining(task=Classification(network=NET), variant=variant, mrkld_weight=0.1, source_weight=0.5)
    labels = torch.tensor([3, -1, 5, -1, -1, 0])
    m.rounds.labels = labels
    probs = torch.softmax(torch.randn(6, 10), 1)
    m.rounds.soft_labels = lrent_soft_labels(probs, torch.full((10,), 0.3))
    b = _batch()
    out = m.compute_losses(b)
    logits_s, logits_t = m.model(b["source"][0]), m.model(b["target"][0])
    kept = labels >= 0
    ce_s = F.cross_entropy(logits_s, b["source"][1])
    if variant == "lrent":
        soft = m.rounds.soft_labels[kept]
        ce_t = -(soft * logits_t[kept].log_softmax(1)).sum(1).mean()
    else:
        ce_t = F.cross_entropy(logits_t[kept], labels[kept])
    expected = 0.5 * ce_s + ce_t
    if variant == "mrkld":
        expected = expected + 0.1 * (-logits_t[kept].log_softmax(1).mean(1)).mean()
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert out["pseudo_kept"] == pytest.approx(0.5)


def test_no_kept_target_gives_source_loss_only_and_no_nan() -> None:
    m = SelfTraining(task=Classification(network=NET))
    m.rounds.labels = torch.full((6,), -1)
    out = m.compute_losses(_batch())
    assert torch.isfinite(out["loss"]) and out["pseudo_ce"] == 0


def test_starts_from_any_method_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(5)
    src = SourceOnly(task=Classification(network=NET))
    path = tmp_path / "s.ckpt"
    torch.save({"state_dict": src.state_dict()}, path)
    m = SelfTraining(task=Classification(network=NET), init_checkpoint=str(path))
    assert all(torch.equal(a, b) for a, b in zip(m.model.state_dict().values(), src.model.state_dict().values()))
    with pytest.raises(RuntimeError, match="no pseudo-labels"):
        SelfTraining(task=Classification(network=NET)).compute_losses(_batch())
    m = SelfTraining(task=Classification(network=NET))
    m.rounds.labels = torch.full((6,), -1)
    no_index = _batch()
    no_index["target"] = no_index["target"][:2]
    with pytest.raises(ValueError, match="image, label, index"):
        m.compute_losses(no_index)
    trainer = fake_trainer(Path("."), Digits())
    trainer.datamodule.datasets = {}
    with pytest.raises(RuntimeError, match="target_predict"):
        m.rounds.compute_round(trainer, m, 0)
    with pytest.raises(ValueError, match="variant"):
        SelfTraining(task=Classification(network=NET), variant="tent")  # type: ignore[arg-type]


def test_augment_target_attacks_only_pseudo_labelled_samples_with_their_pseudo_labels() -> None:
    from syn2real.adversarial.base import Augmentation

    class Record(Augmentation):
        def __init__(self) -> None:
            self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

        def __call__(self, model, x, y):
            self.calls.append((x, y))
            return x + 1.0, y

    aug = Record()
    m = SelfTraining(task=Classification(network=NET), augment=aug, augment_target=True, source_weight=0.0)
    labels = torch.tensor([3, -1, 5, -1, -1, 0])
    m.rounds.labels = labels
    b = _batch()
    out = m.compute_losses(b)
    assert len(aug.calls) == 2  # source batch, then the kept target samples
    x_t, y_t = aug.calls[1]
    assert torch.equal(y_t, labels[labels >= 0]) and torch.equal(x_t, b["target"][0][labels >= 0])
    expected = F.cross_entropy(m.model(b["target"][0][labels >= 0] + 1.0), labels[labels >= 0])
    assert torch.allclose(out["pseudo_ce"], expected, atol=1e-5)
    assert out["pseudo_kept"] == pytest.approx(0.5)
