"""MeanTeacher (DACS / MIC), one class for both tasks: the teacher is the student's EMA and never trained, the loss
by hand, ClassMix and MIC's masked view in a step, the pseudo-label diagnostics, and the options refused loudly."""

from __future__ import annotations

import pytest
import torch

from syn2real.data.strong_view import StrongViewConfig
from syn2real.losses.mean_teacher import weighted_cross_entropy
from syn2real.methods import MeanTeacher
from syn2real.methods.mean_teacher import MaskConfig
from syn2real.models.heads import NetworkConfig
from syn2real.models.segmentation import SegNetworkConfig
from syn2real.tasks import Classification, Segmentation

CLS = Classification(NetworkConfig(backbone="digits_cnn", num_classes=4, in_chans=1))
SEG = Segmentation(SegNetworkConfig(backbone="resnet18", num_classes=4, in_chans=1, aspp_rates=[1, 2], freeze_bn=False,
                                    backbone_kwargs={"out_indices": [0, 1]}))
NORM = {"pixel_mean": [0.5], "pixel_std": [0.5]}
PLAIN = StrongViewConfig(jitter_strength=0.0, blur=False)  # the identity: losses by hand


def _batch(seg: bool, seed: int = 0, n: int = 2, labelled_target: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1, 28, 28)
    x_s, x_t = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) + 0.5
    y_s = torch.randint(0, 4, (n, 28, 28) if seg else (n,), generator=g)
    y_t = torch.randint(0, 4, y_s.shape, generator=g) if labelled_target else torch.full_like(y_s, 255 if seg else -1)
    return {"source": (x_s, y_s), "target": (x_t, y_t)}


def _set_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    monkeypatch.setattr(MeanTeacher, "global_step", property(lambda self: step))


def test_the_teacher_is_a_frozen_copy_in_eval_mode_and_gets_no_gradient() -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=SEG, mix="none", **NORM)
    for (name, t), s in zip(method.teacher.state_dict().items(), method.model.state_dict().values()):
        assert torch.equal(t, s), name
    method.train()
    assert method.model.training and not method.teacher.training
    assert not any(p.requires_grad for p in method.teacher.parameters())
    method.compute_losses(_batch(True))["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in method.model.parameters())
    # the teacher is not optimised: no teacher parameter in the optimiser's groups
    trained = {id(p) for group in method.param_groups() for p in group["params"]}
    assert not trained & {id(p) for p in method.teacher.parameters()}


def test_the_teacher_follows_the_student_by_ema(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=CLS, mix="none", ema_momentum=0.99, **NORM)
    start = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    method.update_teacher()  # step 0: nothing to average yet
    assert all(torch.equal(start[k], v) for k, v in method.teacher.state_dict().items())
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(1.0)
    _set_step(monkeypatch, 1)
    method.update_teacher()  # α_1 = min(1 − 1/2, 0.99) = 0.5
    for (k, t), s in zip(method.teacher.named_parameters(), method.model.parameters()):
        torch.testing.assert_close(t, 0.5 * start[k] + 0.5 * s.detach())
    method.update_teacher()  # once per optimiser step, however many batches (gradient accumulation)
    assert int(method.ema_step) == 1
    after = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    _set_step(monkeypatch, 9)  # α_9 = 0.9
    method.update_teacher()
    for (k, t), s in zip(method.teacher.named_parameters(), method.model.parameters()):
        torch.testing.assert_close(t, 0.9 * after[k] + 0.1 * s.detach())


@pytest.mark.parametrize("task", [CLS, SEG], ids=["classification", "segmentation"])
def test_loss_by_hand_source_plus_weighted_pseudo_labelled_target(task) -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=task, mix="none", strong_view=PLAIN, pseudo_threshold=0.3, **NORM)
    with torch.no_grad():  # a teacher that differs from the student
        for p in method.teacher.parameters():
            p.mul_(0.9)
    batch = _batch(task is SEG, labelled_target=True)
    out = method.compute_losses(batch)
    x_s, y_s = batch["source"]
    x_t = batch["target"][0]
    with torch.no_grad():
        probs = task.levels(method.teacher, x_t)[0].softmax(1)
    conf, labels = probs.max(1)
    weight = torch.full_like(conf, float((conf >= 0.3).float().mean()))
    supervised = task.loss(method, task.levels(method.model, x_s), y_s)
    target = weighted_cross_entropy(task.levels(method.model, x_t)[0], labels, weight)
    torch.testing.assert_close(out["loss"], supervised + target)
    torch.testing.assert_close(out["mix_ce"], target.detach())
    torch.testing.assert_close(out["pseudo_weight"], weight.mean())
    y_t = batch["target"][1]
    torch.testing.assert_close(out["pseudo_acc"], (labels == y_t).float().mean())


def test_classmix_step_on_segmentation_and_mic_masks() -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=SEG, mask=MaskConfig(block=4, ratio=0.7), **NORM)
    batch = _batch(True, n=4)
    out = method.compute_losses(batch)
    assert torch.isfinite(out["loss"]) and {"mix_ce", "masked_ce", "source_ce"} <= out.keys()
    x_s, y_s = batch["source"]
    x_t = batch["target"][0]
    labels, weight, _ = method.pseudo_labels(x_t)
    method.strong_cfg = PLAIN
    x_m, y_m, w_m = method.mixed_target(x_s, y_s, x_t, labels, weight)
    from_source = (x_m == x_s).all(dim=1)  # pixels pasted from the source carry its labels and weight 1
    assert bool(from_source.any()) and bool((~from_source).any())
    assert torch.equal(y_m[from_source], y_s[from_source]) and bool((w_m[from_source] == 1).all())
    assert torch.equal(y_m[~from_source], labels[~from_source])
    masked = method.masked_target(x_t)
    hidden = (masked == 0).all(dim=1).float().mean()
    assert 0.5 < float(hidden) < 0.9  # 7 × 7 blocks of 4 px per image, 70 % hidden


def test_mic_for_classification_is_source_plus_masked_consistency() -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=CLS, mix="none", target_weight=0.0, ema_momentum=0.9, pseudo_weight="probability",
                         mask=MaskConfig(block=7, ratio=0.5, strong=False), **NORM)
    batch = _batch(False, n=4)
    out = method.compute_losses(batch)
    assert "mix_ce" not in out and "masked_ce" in out
    torch.testing.assert_close(out["loss"], out["source_ce"] + out["masked_ce"])


def test_same_seed_same_step() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        method = MeanTeacher(task=SEG, mask=MaskConfig(block=4), **NORM)
        torch.manual_seed(5)
        outs.append(method.compute_losses(_batch(True, n=2))["loss"])
    assert torch.equal(outs[0], outs[1])


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="needs the task Segmentation"):
        MeanTeacher(task=CLS)  # classmix by default
    with pytest.raises(ValueError, match="segmentation only"):
        MeanTeacher(task=CLS, mix="none", ignore_top=15)
    with pytest.raises(ValueError, match="trains on the source alone"):
        MeanTeacher(task=CLS, mix="none", target_weight=0.0)
    with pytest.raises(ValueError, match="ema_momentum"):
        MeanTeacher(task=SEG, ema_momentum=1.0)
    with pytest.raises(ValueError, match="mask: block"):
        MaskConfig(ratio=1.5)
    method = MeanTeacher(task=SEG)
    with pytest.raises(ValueError, match="pixel_mean and pixel_std"):
        method.compute_losses(_batch(True))


def test_ignored_rows_get_no_pseudo_label_weight() -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=SEG, ignore_top=3, ignore_bottom=5, pseudo_threshold=0.0, **NORM)
    _, weight, _ = method.pseudo_labels(_batch(True)["target"][0])
    assert bool((weight[:, :3] == 0).all()) and bool((weight[:, -5:] == 0).all())
    assert bool((weight[:, 3:-5] == 1).all())


def test_evaluate_teacher_uses_the_teacher_for_evaluation_only() -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=CLS, mix="none", evaluate="teacher", **NORM)
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.mul_(0.5)
    method.eval()
    x = torch.randn(3, 1, 28, 28)
    student, teacher = method.model, method.teacher
    with method._evaluated_network():
        assert method.model is teacher
    assert method.model is student and method.teacher is teacher  # swapped back
    out = method.predict_step((x, torch.zeros(3, dtype=torch.long)), 0)
    with torch.no_grad():
        expected = method.teacher(x).softmax(1).max(1)
    torch.testing.assert_close(out["confidence"], expected.values)
    with pytest.raises(ValueError, match="'student', 'teacher' or 'both'"):
        MeanTeacher(task=CLS, mix="none", evaluate="all")


def test_evaluate_both_scores_the_teacher_beside_the_student() -> None:
    torch.manual_seed(0)
    method = MeanTeacher(task=CLS, mix="none", evaluate="both", **NORM)
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.mul_(0.5)
    method.eval()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 4, (8,))
    method.eval_step((x, y), 0)
    student = method.eval_metrics["target"].compute()
    teacher = method.eval_metrics["teacher"].compute()
    with torch.no_grad():
        assert float(student["target/acc"]) == float((method.model(x).argmax(1) == y).float().mean())
        assert float(teacher["teacher/acc"]) == float((method.teacher(x).argmax(1) == y).float().mean())


def test_bn_statistics_source_keeps_the_running_statistics_of_the_target_passes() -> None:
    batch = _batch(True)
    stats = {}
    for mode in ("all", "source"):
        torch.manual_seed(0)
        method = MeanTeacher(task=SEG, mask=MaskConfig(block=4), bn_statistics=mode, **NORM)
        method.train()
        method.compute_losses(batch)
        stats[mode] = method.model.backbone.bn1.running_mean.clone()
        momenta = {m.momentum for m in method.model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
        assert momenta == {0.1}  # restored
    torch.manual_seed(0)
    reference = MeanTeacher(task=SEG, **NORM)
    reference.train()
    reference.supervised_losses(*batch["source"])  # the source pass alone
    torch.testing.assert_close(stats["source"], reference.model.backbone.bn1.running_mean)
    assert not torch.allclose(stats["all"], stats["source"])


def test_feature_distance_adds_the_imagenet_term_on_thing_pixels() -> None:
    from syn2real.losses.feature_distance import feature_distance_loss
    from syn2real.methods.mean_teacher import FeatureDistanceConfig

    torch.manual_seed(0)
    method = MeanTeacher(task=SEG, mix="none", strong_view=PLAIN, feature_distance=FeatureDistanceConfig(
        weight=0.5, classes=[1, 2]), **NORM)
    start = {k: v.clone() for k, v in method.imagenet.state_dict().items()}
    with torch.no_grad():
        for p in method.model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))  # the student has moved away from the frozen copy
    x_s = _batch(True)["source"][0]
    blocks = torch.randint(0, 4, (2, 7, 7), generator=torch.Generator().manual_seed(3))
    y_s = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)  # one class per 4 × 4 block: whole feature pixels
    out = method.source_losses_with_feature_distance(x_s, y_s)
    feats = method.model.backbone_features(x_s)[-1]
    with torch.no_grad():
        reference = method.imagenet(x_s)[-1]
    distance = feature_distance_loss(feats, reference, y_s, [1, 2], 0.75, 4)
    supervised = SEG.loss(method, SEG.levels(method.model, x_s), y_s)
    assert float(distance) > 0
    torch.testing.assert_close(out["loss"], supervised + 0.5 * distance)
    out["loss"].backward()
    assert all(p.grad is None for p in method.imagenet.parameters())  # frozen
    assert all(torch.equal(start[k], v) for k, v in method.imagenet.state_dict().items())
    method.train()
    assert not method.imagenet.training
    with pytest.raises(ValueError, match="needs the task Segmentation"):
        MeanTeacher(task=CLS, mix="none", feature_distance=FeatureDistanceConfig(), **NORM)


def test_training_media_rows_without_a_collective() -> None:
    """The pictures are drawn on rank 0 only: they must not enter the all-reduce of the confidence share."""

    class World2:  # a trainer whose reduce would hang on one rank: the pictures must not call it
        world_size, global_rank, global_step, datamodule = 2, 0, 0, None

        class strategy:  # noqa: N801
            @staticmethod
            def reduce(*args, **kwargs):
                raise AssertionError("training_media entered a collective")

    torch.manual_seed(0)
    method = MeanTeacher(task=SEG, mask=MaskConfig(block=4), **NORM)
    method._trainer = World2()
    media = method.training_media(_batch(True, n=3), max_images=2)
    rows = media["mean_teacher/target"]
    assert rows.shape == (6, 2, 3, 28, 28)  # target, pseudo-label, confident, mixed, mixed label, masked
    assert float(rows.min()) >= 0.0 and float(rows.max()) <= 1.0


def test_the_normalisation_is_read_from_the_data_module() -> None:
    from types import SimpleNamespace

    method = MeanTeacher(task=SEG)
    dm = SimpleNamespace(train_transforms_spec=[{"name": "RandomCrop", "height": 8, "width": 8},
                                                {"name": "Normalize", "mean": [0.5], "std": [0.25]}],
                         eval_domains=["target"], classes=None)
    method._trainer = SimpleNamespace(datamodule=dm)
    method.setup("fit")
    assert method.pixel_mean == (0.5,) and method.pixel_std == (0.25,)
    dm.train_transforms_spec = [{"name": "Normalize", "mean": [0.5], "std": [0.5], "max_pixel_value": 1.0}]
    other = MeanTeacher(task=SEG)
    other._trainer = SimpleNamespace(datamodule=dm)
    with pytest.raises(ValueError, match="max_pixel_value 1.0"):  # refused, not silently rescaled
        other.setup("fit")
