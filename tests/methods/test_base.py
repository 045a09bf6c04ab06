from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import make_class_tree

from syn2real.adversarial.base import Augmentation
from syn2real.data.datamodule import DomainPairDataModule, DomainSpec
from syn2real.methods import OptimConfig, SourceOnly
from syn2real.tasks import Classification
from syn2real.core.distributed import global_mean_weight
from syn2real.methods.optim import lr_lambda
from syn2real.models.heads import NetworkConfig


def test_lr_schedules_by_hand() -> None:
    poly = lr_lambda(OptimConfig(scheduler="poly", power=0.9), total_steps=100)
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5**0.9) and poly(100) == 0.0
    inv = lr_lambda(OptimConfig(scheduler="inv", gamma=10.0, inv_power=0.75), total_steps=100)
    assert inv(50) == pytest.approx((1 + 10 * 0.5) ** -0.75)
    cos = lr_lambda(OptimConfig(scheduler="cosine", min_lr_ratio=0.1), total_steps=10)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.1 + 0.9 * 0.5) and cos(10) == pytest.approx(0.1)
    warm = lr_lambda(OptimConfig(scheduler="none", warmup_steps=4), total_steps=10)
    assert [warm(i) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    # StepLR(7 epochs, 0.1) over 20 epochs of 10 steps (DRST's VisDA settings)
    step = lr_lambda(OptimConfig(scheduler="step", milestones=(0.35, 0.7), step_factor=0.1), total_steps=200)
    assert [step(i) for i in (0, 69, 70, 139, 140, 199)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_param_groups_apply_backbone_multiplier() -> None:
    method = SourceOnly(optim=OptimConfig(name="sgd", lr=0.1, backbone_lr_mult=0.1))
    opt = method.build_optimizer(method.param_groups())
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"backbone": pytest.approx(0.01), "head": pytest.approx(0.1)}
    assert isinstance(method.build_optimizer(method.param_groups(), OptimConfig(name="adamw")), torch.optim.AdamW)


def test_hparams_are_primitives_for_weights_only_checkpoints() -> None:
    method = SourceOnly(task=Classification(network=NetworkConfig(num_classes=3)), optim=OptimConfig(name="adam"))
    hp = dict(method.hparams)
    assert hp["task"]["init_args"]["network"]["num_classes"] == 3 and hp["optim"]["name"] == "adam"

    def check(v):
        if isinstance(v, dict):
            return all(check(x) for x in v.values())
        if isinstance(v, list):
            return all(check(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    assert check(hp)


class FlipAugment(Augmentation):
    """Test double: records calls and flips images horizontally."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model, x, y):
        self.calls += 1
        return x.flip(-1), y


def _dm(tmp_path: Path) -> DomainPairDataModule:
    src = make_class_tree(tmp_path / "src", ["0", "1", "2"], per_class=16)
    tgt = make_class_tree(tmp_path / "tgt", ["0", "1", "2"], per_class=6, seed=3)
    return DomainPairDataModule(
        source=DomainSpec(str(src)), target=DomainSpec(str(tgt)), batch_size=8, num_workers=0, image_mode="L",
        train_transforms=[{"name": "Normalize", "mean": [0.5], "std": [0.5]}],
        eval_transforms=[{"name": "Normalize", "mean": [0.5], "std": [0.5]}],
    )


def _fit(tmp_path: Path, seed: int, augment: Augmentation | None = None, steps: int = 6) -> SourceOnly:
    L.seed_everything(seed, workers=True)
    method = SourceOnly(task=Classification(network=NetworkConfig(num_classes=3)), optim=OptimConfig(name="adam", lr=1e-3), augment=augment)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, deterministic=True, default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(method, datamodule=_dm(tmp_path))
    return method


def test_same_seed_same_weights_different_seed_differs(tmp_path: Path) -> None:
    a = _fit(tmp_path / "a", seed=7)
    b = _fit(tmp_path / "b", seed=7)
    c = _fit(tmp_path / "c", seed=8)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


def test_augment_hook_is_applied_to_the_source_batch(tmp_path: Path) -> None:
    aug = FlipAugment()
    _fit(tmp_path, seed=0, augment=aug, steps=3)
    assert aug.calls == 3


def test_source_only_learns_and_evaluates_target(tmp_path: Path) -> None:
    L.seed_everything(0, workers=True)
    method = SourceOnly(task=Classification(network=NetworkConfig(num_classes=3)), optim=OptimConfig(name="adam", lr=3e-3))
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    dm = _dm(tmp_path)
    trainer.fit(method, datamodule=dm)
    metrics = trainer.callback_metrics
    # the synthetic classes (a bright square at a class-specific place) are trivially learnable
    assert metrics["target/acc"].item() > 0.9
    assert not math.isnan(metrics["target/ece"].item())
    assert {"target/acc_class/0", "target/acc_class_mean"} <= set(metrics)
    # label-free validators: a confident model has entropy score near 0 (from below), IM near log 3
    assert -0.5 < metrics["target/validator/entropy"].item() <= 0.0
    assert metrics["target/validator/infomax"].item() > 0.5
    assert metrics["target/validator/snd"].item() > 0.0
    assert method.last_confusion["target"].sum().item() == 18


def test_global_mean_weight_turns_per_rank_means_into_the_global_mean() -> None:
    """Two ranks with 3 and 1 loss elements (values 1, 2, 3 | 10): DDP averages the weighted per-rank means, which must
    give the mean over all 4 elements, 4.0; one rank with a single element and the other none still works."""
    from types import SimpleNamespace

    def rank(counts: list[int], r: int) -> SimpleNamespace:
        mean = torch.tensor(sum(counts) / len(counts))
        strategy = SimpleNamespace(reduce=lambda value, reduce_op: mean)
        trainer = SimpleNamespace(world_size=len(counts), strategy=strategy)
        return SimpleNamespace(_trainer=trainer, trainer=trainer)

    values = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0])]
    weighted = [global_mean_weight(rank([3, 1], r), torch.tensor(len(v))) * v.mean() for r, v in enumerate(values)]
    assert float(sum(weighted) / 2) == pytest.approx(4.0)
    assert float(global_mean_weight(rank([1, 0], 0), torch.tensor(1))) == 2.0
    assert float(global_mean_weight(rank([1, 0], 1), torch.tensor(0))) == 0.0
    single = SimpleNamespace(_trainer=SimpleNamespace(world_size=1))
    assert float(global_mean_weight(single, torch.tensor(7))) == 1.0
    assert float(global_mean_weight(single, torch.tensor(0))) == 0.0
