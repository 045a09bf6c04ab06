"""GeneralisationDiagnostics: the frozen ImageNet guide it builds, and the KL / hyperspherical energy it logs per
evaluation domain, on features and classifiers chosen so the values are known by hand."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from syn2real.callbacks.diagnostics import GeneralisationDiagnostics
from syn2real.models.backbones import create_backbone
from syn2real.models.heads import NetworkConfig

LN3 = math.log(3.0)
# KL(uniform || softmax([ln 3, 0])) = KL(uniform || (3/4, 1/4)) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
KL_HALF = 0.5 * math.log(4.0 / 3.0)


class _Guide(nn.Module):
    """An "ImageNet model" whose own logits are always 0 (uniform) and whose classifier maps a feature vector v to
    (ln 3 · v_0, ln 3 · v_1)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[LN3, 0.0, 0.0], [0.0, LN3, 0.0]]))

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 2)


class _Method:
    """What the callback reads of a method: the student's backbone (here the identity: features = inputs), the
    evaluation domains, and ``log_dict``."""

    def __init__(self, domains: tuple[str, ...] = ("target", "source")) -> None:
        self.model = SimpleNamespace(backbone=nn.Identity())
        self.eval_domains = list(domains)
        self.logged: list[tuple[dict, dict]] = []

    def log_dict(self, values: dict, **kwargs) -> None:
        self.logged.append((values, kwargs))


def _trainer(sanity: bool = False, world: int = 1, reduce=None) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=sanity, world_size=world, strategy=SimpleNamespace(reduce=reduce))


E1, E2, E3 = torch.eye(3)


def _callback() -> GeneralisationDiagnostics:
    cb = GeneralisationDiagnostics()
    cb.guide = _Guide()
    return cb


def _batch(*rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack(rows)
    return x, torch.zeros(len(rows), dtype=torch.long)


def test_kl_and_energy_by_hand_weighted_by_batch_size() -> None:
    cb, method, trainer = _callback(), _Method(), _trainer()
    # batch 1, features e1, e2, e3: student logits (ln3, 0), (0, ln3), (0, 0) -> KL 1/2 ln(4/3), the same, 0;
    # orthonormal rows are sqrt(2) apart -> energy 1/sqrt(2)
    cb.on_validation_batch_end(trainer, method, None, _batch(E1, E2, E3), 0, 0)
    # batch 2, features e1, -e1: KL 1/2 ln(4/3) each; antipodal rows are 2 apart -> energy 1/2
    cb.on_validation_batch_end(trainer, method, None, _batch(E1, -E1), 1, 0)
    cb.on_validation_epoch_end(trainer, method)
    ((values, kwargs),) = method.logged
    assert set(values) == {"target/diag/imagenet_kl", "target/diag/energy"}
    assert values["target/diag/imagenet_kl"] == pytest.approx((2 * KL_HALF + 2 * KL_HALF) / 5, abs=1e-6)
    assert values["target/diag/energy"] == pytest.approx((3 / math.sqrt(2) + 2 * 0.5) / 5, abs=1e-6)
    assert kwargs.get("sync_dist") is False  # already summed over ranks by the callback
    # the sums start afresh at the next evaluation
    cb.on_validation_epoch_end(trainer, method)
    assert len(method.logged) == 1


def test_each_evaluation_domain_gets_its_own_keys() -> None:
    cb, method, trainer = _callback(), _Method(("target", "source")), _trainer()
    cb.on_validation_batch_end(trainer, method, None, _batch(E3, -E3), 0, dataloader_idx=0)  # KL 0, energy 1/2
    cb.on_validation_batch_end(trainer, method, None, _batch(E1, E2), 0, dataloader_idx=1)  # KL 1/2 ln(4/3)
    cb.on_validation_epoch_end(trainer, method)
    values = {k: v for logged, _ in method.logged for k, v in logged.items()}
    assert values == pytest.approx({
        "target/diag/imagenet_kl": 0.0,
        "target/diag/energy": 0.5,
        "source/diag/imagenet_kl": KL_HALF,
        "source/diag/energy": 1 / math.sqrt(2),
    }, abs=1e-6)


def test_student_equal_to_the_guide_has_zero_kl() -> None:
    cb, method, trainer = _callback(), _Method(), _trainer()
    # a student whose features give the guide's own (uniform) logits through the guide's classifier
    cb.on_validation_batch_end(trainer, method, None, _batch(E3, 2 * E3, -E3), 0, 0)
    cb.on_validation_epoch_end(trainer, method)
    values = method.logged[0][0]
    assert values["target/diag/imagenet_kl"] == pytest.approx(0.0, abs=1e-7)
    # rows e3, 2 e3 coincide after normalisation: their distance is clamped to eps = 1e-6, so they dominate
    assert values["target/diag/energy"] == pytest.approx((2 / 1e-6 + 4 * 0.5) / 6, rel=1e-4)


def test_sanity_check_batches_and_a_missing_guide_log_nothing() -> None:
    method = _Method()
    cb = _callback()
    cb.on_validation_batch_end(_trainer(sanity=True), method, None, _batch(E1, E2), 0, 0)
    cb.on_validation_epoch_end(_trainer(), method)
    assert method.logged == []
    idle = GeneralisationDiagnostics()  # not set up: no guide
    idle.on_validation_batch_end(_trainer(), method, None, _batch(E1, E2), 0, 0)
    idle.on_validation_epoch_end(_trainer(), method)
    assert method.logged == []


def test_sums_are_reduced_over_ranks_before_dividing() -> None:
    cb, method = _callback(), _Method()
    reduced = []

    def reduce(sums: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        reduced.append(sums.clone())
        # the other rank saw 2 images with KL 0 and energy 1/2 (sums: 0, 1, 2)
        return sums + torch.tensor([0.0, 1.0, 2.0], dtype=sums.dtype)

    trainer = _trainer(world=2, reduce=reduce)
    cb.on_validation_batch_end(trainer, method, None, _batch(E1, E2, E3), 0, 0)
    cb.on_validation_epoch_end(trainer, method)
    assert len(reduced) == 1 and reduced[0].dtype == torch.float64
    assert reduced[0].tolist() == pytest.approx([2 * KL_HALF, 3 / math.sqrt(2), 3.0], abs=1e-6)
    values = method.logged[0][0]
    assert values["target/diag/imagenet_kl"] == pytest.approx(2 * KL_HALF / 5, abs=1e-6)
    assert values["target/diag/energy"] == pytest.approx((3 / math.sqrt(2) + 1.0) / 5, abs=1e-6)


# ------------------------------------------------------------------------------------------------ setup


def _method_with(cfg: NetworkConfig) -> SimpleNamespace:
    return SimpleNamespace(network_cfg=cfg)


def test_setup_builds_a_frozen_guide_from_the_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    imagenet = create_backbone("test_efficientnet", num_classes=1000, in_chans=3)
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    cfg = NetworkConfig(backbone="test_efficientnet", num_classes=7, in_chans=3, weights=str(path))
    cb = GeneralisationDiagnostics()
    cb.setup(SimpleNamespace(), _method_with(cfg), "fit")
    guide = cb.guide
    assert not guide.training and not any(p.requires_grad for p in guide.parameters())
    assert guide.get_classifier().out_features == 1000
    expected = imagenet.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in guide.state_dict().items())  # classifier included

    # a student that still has the ImageNet features: its features through the guide's classifier are the guide's
    # own logits, so the logged KL is 0
    student = create_backbone("test_efficientnet", weights=str(path), num_classes=0, in_chans=3).eval()
    method = SimpleNamespace(model=SimpleNamespace(backbone=student), eval_domains=["target"], logged=[])
    method.log_dict = lambda values, **kwargs: method.logged.append(values)
    x = torch.randn(3, 3, 32, 32)
    cb.on_validation_batch_end(_trainer(), method, None, (x, torch.zeros(3)), 0, 0)
    cb.on_validation_epoch_end(_trainer(), method)
    assert method.logged[0]["target/diag/imagenet_kl"] == pytest.approx(0.0, abs=1e-6)
    assert method.logged[0]["target/diag/energy"] > 0


def test_setup_prefers_its_own_weights_and_needs_some(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_backbone("digits_cnn", num_classes=10)
    path = tmp_path / "features.pth"
    torch.save(source.state_dict(), path)
    cfg = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1, weights=None)
    cb = GeneralisationDiagnostics(weights=str(path), imagenet_classes=5)
    cb.setup(SimpleNamespace(), _method_with(cfg), "validate")
    assert cb.guide.get_classifier().out_features == 5
    assert torch.equal(cb.guide.features[0][0].weight, source.features[0][0].weight)
    with pytest.raises(ValueError, match="neither diagnostics.weights nor model.init_args.task.init_args.network.weights"):
        GeneralisationDiagnostics().setup(SimpleNamespace(), _method_with(cfg), "fit")
