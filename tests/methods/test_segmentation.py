"""Segmentation methods on tiny random batches: which networks a training step moves, which get no gradient,
pseudo-label cross-entropy with 255 ignored, and same seed -> same numbers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.losses.self_training import mrkld_loss
from syn2real.callbacks.pixel_pseudo_labels import PixelPseudoLabelRounds
from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.methods import CyCADA, OutputSpaceAdaptation, SelfTraining, SourceOnly
from syn2real.methods.self_training import cbst_seg_optim
from syn2real.tasks import Segmentation
from syn2real.tasks.segmentation import colorize
from syn2real.metrics.segmentation import InferenceConfig
from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig
from syn2real.models.segmentation import SegNetworkConfig

C = 4
NET = SegNetworkConfig(backbone="resnet18", num_classes=C, aspp_rates=[1, 2])
NET_ML = SegNetworkConfig(backbone="resnet18", num_classes=C, aspp_rates=[1, 2], multi_level=True)
DISC = [8, 16]
IMAGENET = dict(pixel_mean=[0.485, 0.456, 0.406], pixel_std=[0.229, 0.224, 0.225])


def seg_batch(n: int = 2, size: int = 32, seed: int = 0, pseudo: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    x_s, x_t = torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)
    y_s = torch.randint(0, C, (n, size, size), generator=g)
    y_s[:, :4] = 255
    y_t = torch.full((n, size, size), 255)
    if pseudo:
        y_t[:, 8:20, 8:20] = torch.randint(0, C, (n, 12, 12), generator=g)
    return {"source": (x_s, y_s), "target": (x_t, y_t, torch.arange(n))}


def save_checkpoint(method: torch.nn.Module, path: Path) -> Path:
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": {}}, path)
    return path


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    return save_checkpoint(SourceOnly(task=Segmentation(network=NET)), tmp_path_factory.mktemp("seg") / "source.ckpt")


def _osa(seed: int, **kwargs) -> tuple[OutputSpaceAdaptation, list[torch.optim.Optimizer]]:
    torch.manual_seed(seed)
    method = OutputSpaceAdaptation(task=Segmentation(network=kwargs.pop("network", NET)), discriminator_channels=DISC, **kwargs)
    opt_seg = method.build_optimizer(method.param_groups())
    cfg = method.disc_optim_cfg
    opt_d = method.build_optimizer([{"params": list(method.discriminators.parameters()), "lr": cfg.lr}], cfg)
    return method.train(), [opt_seg, opt_d]


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)
               and after[k].is_floating_point())


@pytest.mark.parametrize("network,disc_input", [(NET, "entropy"), (NET_ML, "softmax")])
def test_output_space_step_moves_segmenter_and_discriminators_not_by_the_adversarial_loss(network, disc_input) -> None:
    method, (opt_seg, opt_d) = _osa(0, network=network, discriminator_input=disc_input, entropy_weight=0.001)
    assert len(method.discriminators) == (2 if network.multi_level else 1)
    assert method.lambda_adv == ([0.001, 0.0002] if network.multi_level else [0.001])
    d_ids = {id(p) for p in method.discriminators.parameters()}
    assert not d_ids & {id(p) for g in opt_seg.param_groups for p in g["params"]}
    seen: dict = {}
    seg_step = opt_seg.step

    def checked_step(*args, **kwargs):
        # when the segmenter steps, its adversarial loss has been backpropagated: the discriminators hold no gradient
        seen["d_grads"] = [p.grad for p in method.discriminators.parameters()]
        seen["head_grad"] = method.model.classifier.branches[0].weight.grad.clone()
        return seg_step(*args, **kwargs)

    opt_seg.step = checked_step  # type: ignore[method-assign]
    before = {k: v.clone() for k, v in method.state_dict().items()}
    logged = method.update_step(seg_batch(), [opt_seg, opt_d])  # plain torch optimisers, no trainer
    after = method.state_dict()
    assert all(g is None or not bool(g.any()) for g in seen["d_grads"])
    assert seen["head_grad"].abs().sum() > 0
    assert _changed(before, after, "model.classifier.") and _changed(before, after, "model.backbone.")
    for i in range(len(method.discriminators)):
        assert _changed(before, after, f"discriminators.{i}.")
    # the discriminators' gradient is their own loss only: it is left in .grad after opt_d.step
    assert all(p.grad is not None and p.requires_grad for p in method.discriminators.parameters())
    assert {"loss", "adversarial", "discriminator_loss", "target_entropy"} <= set(logged)
    assert logged["adversarial"] > 0


def test_output_space_adversarial_gradient_reaches_the_segmenter() -> None:
    batch = seg_batch(seed=3)
    grads = {}
    for lam in (0.0, 1.0):
        method, opts = _osa(0, lambda_adv=[lam])
        grads[lam] = []
        opts[0].step = lambda *a, **k: grads[lam].append(  # type: ignore[method-assign]
            method.model.classifier.branches[0].weight.grad.clone())
        method.update_step(batch, opts)
    assert not torch.allclose(grads[0.0][0], grads[1.0][0])


def test_output_space_same_seed_same_numbers() -> None:
    runs = []
    for _ in range(2):
        method, opts = _osa(7)
        logged = [method.update_step(seg_batch(seed=i), opts) for i in range(2)]
        runs.append(({k: float(v) for step in logged for k, v in step.items()}, method.state_dict()))
    (la, sa), (lb, sb) = runs
    assert la == lb
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_output_space_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="lambda_adv needs one non-negative weight per output level"):
        OutputSpaceAdaptation(task=Segmentation(network=NET_ML), lambda_adv=[0.001], discriminator_channels=DISC)
    with pytest.raises(ValueError, match="discriminator_input"):
        OutputSpaceAdaptation(task=Segmentation(network=NET), discriminator_input="features", discriminator_channels=DISC)  # type: ignore


def test_source_only_loss_is_ce_with_aux_level_and_ignore() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Segmentation(network=NET_ML)).train()
    batch = seg_batch()
    out = method.compute_losses(batch)
    x, y = batch["source"]
    levels = [F.interpolate(lv, size=(32, 32), mode="bilinear", align_corners=False)
              for lv in method.model.forward_levels(x)]
    expected = F.cross_entropy(levels[0], y, ignore_index=255) + 0.1 * F.cross_entropy(levels[1], y, ignore_index=255)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert method.model.aux_classifier.branches[0].weight.grad.abs().sum() > 0


def test_self_training_uses_pseudo_labels_with_255_ignored(source_ckpt: Path) -> None:
    method = SelfTraining(task=Segmentation(network=NET), init_checkpoint=str(source_ckpt), variant="mrkld").train()
    src = torch.load(source_ckpt, weights_only=True)["state_dict"]
    assert torch.equal(method.model.classifier.branches[0].weight, src["model.classifier.branches.0.weight"])
    batch = seg_batch(pseudo=True)
    out = method.compute_losses(batch)
    x_t, pseudo = batch["target"][0], batch["target"][1]
    logits_t = method.model(x_t)
    torch.testing.assert_close(out["pseudo_ce"], F.cross_entropy(logits_t, pseudo, ignore_index=255), rtol=1e-5,
                               atol=1e-6)
    kept = pseudo != 255
    assert out["pseudo_kept"].item() == pytest.approx(kept.float().mean().item())
    torch.testing.assert_close(out["mrkld"], mrkld_loss(logits_t, kept), rtol=1e-5, atol=1e-6)
    expected = out["source_ce"] + out["pseudo_ce"] + 0.1 * out["mrkld"]
    torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-5, atol=1e-6)
    # changing the prediction target of an ignored pixel changes nothing; an all-ignored batch gives 0, not NaN
    assert task_cross_entropy(logits_t, torch.full_like(pseudo, 255)).item() == 0.0
    none = method.compute_losses(seg_batch(pseudo=False))
    assert none["pseudo_ce"].item() == 0.0 and torch.isfinite(none["loss"])
    out["loss"].backward()
    assert method.model.backbone.conv1.weight.grad.abs().sum() > 0


def test_self_training_rejects_lrent_and_has_its_round_callback() -> None:
    with pytest.raises(ValueError, match="'lrent' .* is not offered for segmentation"):
        SelfTraining(task=Segmentation(network=NET), variant="lrent")
    with pytest.raises(ValueError, match="thresholds from confidence histograms"):
        SelfTraining(task=Segmentation(network=NET), rounds=RoundConfig(thresholds="exact"))
    with pytest.raises(ValueError, match="augment_target needs image-level pseudo-labels"):
        SelfTraining(task=Segmentation(network=NET), augment_target=True)
    method = SelfTraining(task=Segmentation(network=NET), rounds=RoundConfig(epochs_per_round=3, bins=500))
    assert method.configure_callbacks() == [method.rounds]
    assert isinstance(method.rounds, PixelPseudoLabelRounds)
    assert (method.rounds.cfg.epochs_per_round, method.rounds.cfg.bins) == (3, 500)
    assert method.optim_cfg == cbst_seg_optim()  # the CBST code's segmentation optimiser by default


def _fit_cycada(ckpt: Path, seed: int) -> tuple[CyCADA, dict[str, torch.Tensor]]:
    L.seed_everything(seed)
    method = CyCADA(task=Segmentation(network=NET), teacher_checkpoint=str(ckpt), pool_size=2, **IMAGENET,
                       generator=GeneratorConfig(channels=3, ngf=8, n_blocks=2),
                       discriminator=PatchDiscriminatorConfig(ndf=8))
    start = {k: v.clone() for k, v in method.state_dict().items()}
    loader = torch.utils.data.DataLoader([seg_batch(seed=i) for i in range(2)], batch_size=None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(method, train_dataloaders=loader)
    assert trainer.global_step == 3 * 2
    return method, start


def test_seg_cycada_moves_generators_discriminators_task_model_not_teacher(source_ckpt: Path) -> None:
    first, start = _fit_cycada(source_ckpt, seed=5)
    a = first.state_dict()
    for prefix in ("generator_st.", "generator_ts.", "discriminator_t.", "discriminator_s.", "model."):
        assert _changed(start, a, prefix), prefix
    assert not _changed(start, a, "teacher.")
    teacher = torch.load(source_ckpt, weights_only=True)["state_dict"]
    assert torch.equal(a["teacher.classifier.branches.0.weight"], teacher["model.classifier.branches.0.weight"])
    second, _ = _fit_cycada(source_ckpt, seed=5)
    b = second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_inference_settings_and_colorize() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Segmentation(network=NET, inference=InferenceConfig(mode="slide", window=[16, 16], stride=[12, 12])))
    method.eval()
    probs = method.task.segment(method.model, torch.randn(1, 3, 32, 40), out_size=(64, 80))
    assert probs.shape == (1, C, 64, 80)
    rgb = colorize(torch.tensor([[[0, 3, 255]]]), C)
    assert rgb.shape == (1, 3, 1, 3) and torch.all(rgb[0, :, 0, 2] == 1) and rgb.max() <= 1.0  # 255 shown white


def test_multi_level_run_starts_from_a_single_level_checkpoint(tmp_path) -> None:
    """AdaptSegNet multi-level from a single-level source-only checkpoint: the main weights load, the auxiliary
    classifier keeps its initialisation; any other missing weight is still an error."""
    single = SourceOnly(task=Segmentation(network=SegNetworkConfig(backbone="resnet18", num_classes=3, aspp_rates=[1, 2])))
    path = tmp_path / "single.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in single.model.state_dict().items()}}, path)
    multi_cfg = SegNetworkConfig(backbone="resnet18", num_classes=3, aspp_rates=[1, 2], multi_level=True)
    method = OutputSpaceAdaptation(task=Segmentation(network=multi_cfg), init_checkpoint=str(path))
    assert torch.equal(method.model.classifier.branches[0].weight, single.model.classifier.branches[0].weight)
    broken = {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if "classifier" not in k}
    torch.save({"state_dict": broken}, path)
    with pytest.raises(ValueError, match="does not fit"):
        OutputSpaceAdaptation(task=Segmentation(network=multi_cfg), init_checkpoint=str(path))
