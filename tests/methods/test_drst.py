"""DRST (:class:`~syn2real.methods.DRST`): its losses by hand, the domain classifier on detached features, the
class-balanced rounds labelling from the robust classifier through the method hook (with the ratio recorded), the
refusal of segmentation, and the hyper-parameters of a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from round_fixtures import NET, Digits, fake_trainer

from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.losses.drst import density_ratio
from syn2real.losses.self_training import class_balanced_thresholds, pseudo_labels
from syn2real.methods import DRST
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification


def module(**kwargs) -> DRST:
    torch.manual_seed(0)
    m = DRST(task=Classification(network=NET), rounds=RoundConfig(epochs_per_round=1), **kwargs)
    m.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
    return m


def _batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(3)
    xs, xt = torch.randn(n, 1, 28, 28, generator=g), torch.randn(n, 1, 28, 28, generator=g)
    return {"source": (xs, torch.randint(0, 10, (n,), generator=g)),
            "target": (xt, torch.full((n,), 7), torch.arange(n))}


def test_losses_by_hand() -> None:
    m = module(source_weight=0.5, domain_weight=0.3)
    labels = torch.tensor([3, -1, 5, -1, -1, 0])
    m.rounds.labels = labels
    b = _batch()
    out = m.compute_losses(b)
    logits, features = m.model(torch.cat([b["source"][0], b["target"][0]]), return_features=True)
    d = m.domain_classifier(features)[:, 0]
    r = d.exp()  # balanced batches, ratio inside [0.1, 10] for an untrained classifier
    assert bool(((r > 0.1) & (r < 10)).all())
    scaled = logits * r[:, None]
    kept = labels >= 0
    ce_s = F.cross_entropy(scaled[:6], b["source"][1])
    ce_t = F.cross_entropy(scaled[6:][kept], labels[kept])
    bce = F.binary_cross_entropy_with_logits(d, torch.cat([torch.ones(6), torch.zeros(6)]))
    assert torch.allclose(out["loss"], 0.5 * ce_s + ce_t + 0.3 * bce, atol=1e-5)
    assert torch.allclose(out["ratio_target"], r[6:].mean(), atol=1e-6)
    assert out["pseudo_kept"] == pytest.approx(0.5)
    assert m.domain_counts.tolist() == [6.0, 6.0]


def test_domain_classifier_learns_on_detached_features_only() -> None:
    m = module(source_weight=0.0, target_weight=0.0)
    m.rounds.labels = torch.full((6,), -1)
    m.compute_losses(_batch())["loss"].backward()
    assert all(p.grad is None or not p.grad.any() for p in m.model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.domain_classifier.parameters())
    groups = {g["name"]: g for g in m.param_groups()}
    assert groups["domain_classifier"]["params"] == list(m.domain_classifier.parameters())


def test_rounds_label_from_the_robust_classifier_and_record_the_ratio(tmp_path: Path) -> None:
    data, m = Digits(), module()
    with torch.no_grad():  # a domain classifier that finds the target unlike the source: r = e^-1.5 for all
        last = m.domain_classifier.net[-1]
        last.weight.zero_()
        last.bias.fill_(-1.5)
    m.domain_counts.fill_(10.0)
    m.rounds.on_train_epoch_start(fake_trainer(tmp_path, data), m)
    m.eval()
    with torch.no_grad():
        logits = m.model(data.x)
    robust = (logits * torch.exp(torch.tensor(-1.5))).softmax(1)
    k = class_balanced_thresholds(robust, 0.2)
    assert torch.equal(m.rounds.labels, pseudo_labels(robust, k))
    assert torch.allclose(m.rounds.thresholds, k)
    rec = m.rounds.history[0]
    assert rec["mean_density_ratio"] == pytest.approx(torch.exp(torch.tensor(-1.5)).item(), rel=1e-5)
    assert rec["mean_density_ratio_kept"] == pytest.approx(rec["mean_density_ratio"], rel=1e-5)
    assert rec["pseudo_label_acc"] is not None and 0.0 <= rec["target_ece"] <= 1.0
    # the robust prediction is flatter than the plain one (r < 1), same decisions
    plain = logits.softmax(1)
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(1)  # noqa: E731
    assert bool((entropy(robust) > entropy(plain)).all())
    assert torch.equal(robust.argmax(1), plain.argmax(1))


def test_ratio_uses_the_prior_of_the_seen_batches() -> None:
    m = module()
    logits = torch.tensor([0.0, 1.0])
    assert torch.allclose(m.density_ratio(logits), logits.exp())  # nothing seen yet: n_t/n_s = 1
    m.domain_counts.copy_(torch.tensor([30.0, 10.0], dtype=torch.float64))
    assert torch.allclose(m.density_ratio(logits), density_ratio(logits, 30, 10, 0.1, 10.0))


def test_segmentation_is_refused_and_checkpoints_hold_only_drst_arguments() -> None:
    from syn2real.models.segmentation import SegNetworkConfig
    from syn2real.tasks import Segmentation

    with pytest.raises(ValueError, match="Classification only.*per-pixel density ratio"):
        DRST(task=Segmentation(network=SegNetworkConfig()))
    m = module(ratio_min=0.05)
    assert "variant" not in m.hparams and "mrkld_weight" not in m.hparams
    assert m.hparams["ratio_min"] == 0.05 and m.hparams["gradient"] == "robust"
    with pytest.raises(ValueError, match="ratio_min"):
        module(ratio_min=0.0)
    with pytest.raises(ValueError, match="gradient"):
        module(gradient="hand")


@pytest.mark.parametrize("source", ["ASG", "CDAN"])
def test_chains_from_asg_and_adversarial_checkpoints(source: str, tmp_path: Path) -> None:
    """configs/visda17/drst.yaml's chains: ASG's head (bottleneck without BatchNorm) and CDAN's network load into
    DRST's task network; the domain classifier starts fresh."""
    import warnings

    from syn2real import methods

    cfg = NetworkConfig(backbone="test_resnet", num_classes=5, in_chans=3, bottleneck_dim=16, bottleneck_norm=False)
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random classifier.*")
        start = getattr(methods, source)(task=Classification(network=cfg))
    path = tmp_path / f"{source}.ckpt"
    torch.save({"state_dict": start.state_dict()}, path)
    m = DRST(task=Classification(network=cfg), init_checkpoint=str(path))
    for (name, a), b in zip(m.model.state_dict().items(), start.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert m.domain_classifier.in_features == 16
