"""AugMix: the paper's op set, each op by hand (8-bit rules against PIL), mixing weights, photometric ops never
moving a pixel, the Jensen–Shannon loss by hand and against timm, split BatchNorm, determinism, a method step."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from syn2real.adversarial import AugMix, DualBatchNorm
from syn2real.adversarial.augmix import (
    AUGMIX_OPS,
    OPS,
    PHOTOMETRIC_OPS,
    augmix_pixels,
    resolve_ops,
    sample_mixing,
)
from syn2real.losses.consistency import js_divergence
from syn2real.methods import SourceOnly
from syn2real.models.heads import NetworkConfig, build_classifier
from syn2real.tasks import Classification

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)


def digits(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_op_sets_are_the_papers() -> None:
    assert set(AUGMIX_OPS) == {"autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
                               "translate_x", "translate_y"} == set(OPS)
    assert set(PHOTOMETRIC_OPS) == {"autocontrast", "equalize", "posterize", "solarize"}
    assert resolve_ops("photometric") == PHOTOMETRIC_OPS and resolve_ops(["rotate"]) == ("rotate",)
    with pytest.raises(ValueError, match="ops must be one of"):
        resolve_ops("all")
    with pytest.raises(ValueError, match="unknown op"):
        resolve_ops(["color"])


def test_mixing_weights_are_dirichlet_and_sum_to_one() -> None:
    torch.manual_seed(0)
    w, m = sample_mixing(4000, width=3, alpha=1.0)
    assert w.shape == (4000, 3) and m.shape == (4000,)
    assert torch.allclose(w.sum(1), torch.ones(4000), atol=1e-6) and (w >= 0).all()
    assert ((m >= 0) & (m <= 1)).all()
    # Dirichlet(1,1,1): each weight has mean 1/3 and variance 1/18; Beta(1, 1) is uniform (mean 1/2, var 1/12)
    assert torch.allclose(w.mean(0), torch.full((3,), 1 / 3), atol=0.02)
    assert abs(w[:, 0].var().item() - 1 / 18) < 0.01
    assert abs(m.mean().item() - 0.5) < 0.02 and abs(m.var().item() - 1 / 12) < 0.01


def test_mix_is_convex_an_unchanged_image_stays_unchanged() -> None:
    # a flat 128/255 image is a fixed point of every photometric op at severity 3 (solarize's threshold is >= 180),
    # so the blend (1 - m) x + m sum_i w_i x equals x exactly when the weights sum to one
    torch.manual_seed(0)
    flat = torch.full((16, 3, 8, 8), 128 / 255)
    out = augmix_pixels(flat, PHOTOMETRIC_OPS, width=3, depth=-1, severity=3.0)
    assert torch.allclose(out, flat, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_op_keeps_shape_and_range(name: str, channels: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, channels, 12, 10, generator=g)
    level = torch.tensor([0.1, 1.0, 2.0, 3.0, 3.0])
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    out = OPS[name](x, level, sign)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1


def _uint8(seed: int = 0, shape: tuple[int, ...] = (12, 10)) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 200, shape).astype(np.uint8)


def test_equalize_and_autocontrast_match_pil_on_8_bit_images() -> None:
    images = [_uint8(s) for s in range(3)]
    x = torch.from_numpy(np.stack(images)).float().div(255).unsqueeze(1)
    ones = torch.ones(3)
    eq = (OPS["equalize"](x, ones, ones) * 255).round().squeeze(1).numpy()
    ac = OPS["autocontrast"](x, ones, ones).squeeze(1).numpy() * 255
    for i, img in enumerate(images):
        assert np.array_equal(eq[i], np.asarray(ImageOps.equalize(Image.fromarray(img))))
        assert np.abs(ac[i] - np.asarray(ImageOps.autocontrast(Image.fromarray(img)))).max() <= 1.0


def test_posterize_solarize_and_translate_by_hand() -> None:
    x = torch.tensor([0, 15, 16, 100, 179, 180, 255], dtype=torch.float32).div(255).view(1, 1, 1, 7)
    one = torch.ones(1)
    # level 3: posterize keeps 4 - int(3 * 4 / 10) = 3 bits (multiples of 32)
    assert torch.equal((OPS["posterize"](x, 3 * one, one) * 255).round().flatten(),
                       torch.tensor([0.0, 0, 0, 96, 160, 160, 224]))
    # level 3: solarize inverts values >= 256 - int(3 * 256 / 10) = 180
    assert torch.equal((OPS["solarize"](x, 3 * one, one) * 255).round().flatten(),
                       torch.tensor([0.0, 15, 16, 100, 179, 75, 0]))
    # width 30, level 3: translate_x moves by int(3 * 10 / 10) = 3 px, exactly (integer shift), black fill
    img = torch.rand(1, 1, 4, 30)
    out = OPS["translate_x"](img, 3 * one, one)
    assert torch.allclose(out[..., :27], img[..., 3:]) and (out[..., 27:] == 0).all()


def test_photometric_ops_never_move_a_pixel() -> None:
    """Permuting the pixels before or after the augmentation gives the same image: each output pixel depends only
    on the same input pixel (and per-image statistics). The geometric set fails the same test."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 9, 9, generator=g)
    perm = torch.randperm(81, generator=g)

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[..., perm].view_as(t)

    for ops, moves in ((PHOTOMETRIC_OPS, False), (AUGMIX_OPS, True)):
        torch.manual_seed(5)
        a = permute(augmix_pixels(x, ops))
        torch.manual_seed(5)
        b = augmix_pixels(permute(x), ops)
        assert torch.allclose(a, b, atol=1e-6) != moves


def test_views_are_seeded_and_in_the_datas_normalisation() -> None:
    aug = AugMix(mean=[0.5], std=[0.5])
    x, _ = digits()
    torch.manual_seed(0)
    a = aug.views(x)
    torch.manual_seed(0)
    b = aug.views(x)
    torch.manual_seed(1)
    c = aug.views(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # two different views
    assert a[0].min() >= -1 - 1e-6 and a[0].max() <= 1 + 1e-6


def _js_by_hand(dists: list[list[float]]) -> float:
    k = len(dists)
    m = [sum(d[c] for d in dists) / k for c in range(len(dists[0]))]
    return sum(sum(p * math.log(p / mc) for p, mc in zip(d, m) if p > 0) for d in dists) / k


def test_js_divergence_by_hand_and_against_timm() -> None:
    from timm.loss import JsdCrossEntropy

    dists = [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]
    logits = [torch.tensor([d]).clamp_min(1e-30).log() for d in dists]
    assert torch.allclose(js_divergence(logits), torch.tensor(_js_by_hand(dists)), atol=1e-6)
    # two views: the classic JS of (0.5, 0.5) and (1, 0): ½[0.5 ln(2/3) + 0.5 ln 2 + ln(4/3)]
    two = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25) + math.log(1 / 0.75))
    assert math.isclose(js_divergence(logits[:2]).item(), two, abs_tol=1e-6)
    assert js_divergence([logits[2], logits[2], logits[2]]).item() == pytest.approx(0.0, abs=1e-7)
    # timm's loss = CE(clean) + alpha * JS on a batch split in three
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 5, generator=g) for _ in range(3)]
    y = torch.randint(0, 5, (4,), generator=g)
    timm_loss = JsdCrossEntropy(num_splits=3, alpha=12, smoothing=0.0)(torch.cat(views), y)
    assert torch.allclose(timm_loss - F.cross_entropy(views[0], y), 12 * js_divergence(views), atol=1e-5)
    # dense outputs: the mean over positions of the per-position divergence
    dense = [torch.randn(2, 5, 3, 4, generator=g) for _ in range(3)]
    flat = [d.permute(0, 2, 3, 1).reshape(-1, 5) for d in dense]
    assert torch.allclose(js_divergence(dense), js_divergence(flat), atol=1e-6)


def test_auxiliary_loss_is_weighted_js_of_clean_and_two_views() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).eval()  # eval: batch statistics do not depend on how the views are batched
    aug = AugMix(weight=12.0)
    x, y = digits()
    assert aug(model, x, y)[0] is x  # the method's CE is on the clean batch
    torch.manual_seed(3)
    loss = aug.auxiliary_losses(model, x, y)["augmix_jsd"]
    torch.manual_seed(3)
    a1, a2 = aug.views(x)
    expected = 12.0 * js_divergence([model(x), model(a1), model(a2)])
    assert torch.allclose(loss, expected, atol=1e-5) and loss > 0
    loss.backward()
    assert model.head[1].weight.grad.abs().sum() > 0


def test_split_bn_sends_the_views_through_the_auxiliary_batchnorms() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).train()
    aug = AugMix(split_bn=True)
    aug.prepare(model)
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    assert len(duals) == 2
    twin = copy.deepcopy(model)
    x, y = digits()
    torch.manual_seed(1)
    aug.auxiliary_losses(model, x, y)["augmix_jsd"].backward()
    twin(x)  # the main path sees the clean batch only: its statistics move as a clean forward moves them
    for m, t in zip(duals, [m for m in twin.modules() if isinstance(m, DualBatchNorm)]):
        assert torch.allclose(m.main.running_mean, t.main.running_mean, atol=1e-6)
        assert not torch.allclose(m.aux.running_mean, t.aux.running_mean)
        assert m.route == "main" and m.aux.weight.grad is not None and m.main.weight.grad is not None
    with pytest.raises(RuntimeError, match="prepare"):
        AugMix(split_bn=True).auxiliary_losses(build_classifier(NET), x, y)


def test_dense_outputs_need_the_photometric_set() -> None:
    seg = nn.Conv2d(1, 3, 1)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="ops: photometric"):
        AugMix().auxiliary_losses(seg, x, y)
    assert AugMix(ops="photometric").auxiliary_losses(seg, x, y)["augmix_jsd"] >= 0


def test_method_step_adds_the_term() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Classification(network=NET), augment=AugMix(split_bn=True))
    assert any(isinstance(m, DualBatchNorm) for m in method.model.modules())
    x, y = digits()
    logged: dict[str, torch.Tensor] = {}
    method.log = lambda *a, **k: None  # type: ignore[method-assign]
    method.log_dict = lambda d, **k: logged.update(d)  # type: ignore[method-assign]
    loss = method.training_step({"source": (x, y), "target": (x, y, torch.arange(6))}, 0)
    assert "train/augmix_jsd" in logged
    assert torch.allclose(loss, logged["train/source_ce"] + logged["train/augmix_jsd"], atol=1e-6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weight"):
        AugMix(weight=-1)
    with pytest.raises(ValueError, match="depth"):
        AugMix(depth=0)
    with pytest.raises(ValueError, match="severity"):
        AugMix(severity=0)


@pytest.mark.slow
def test_augmix_fit_and_card_with_apgd_through_the_cli(tmp_path) -> None:
    import json

    from conftest import REPO, config_args
    from test_cli import SMALL, run_cli

    config = config_args(REPO / "configs" / "digits" / "robust" / "augmix.yaml")
    run = tmp_path / "augmix"
    run_cli("fit", *config, *SMALL, "--trainer.default_root_dir", str(run), "--trainer.logger", "false",
            "--model.init_args.augment.init_args.split_bn", "true", cwd=tmp_path)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(".aux." in k for k in state)  # split BatchNorm: the views' BatchNorms are in the checkpoint
    proc = run_cli("robustness", *config, "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--max_images", "32",
                   "--eps", "0.3", "--pgd_steps", "3", "--apgd_iters", "10", "--corruptions", "none", "--noise",
                   "--max_angle", "0", "--max_shift", "0", "--no_wandb", *SMALL[:4], cwd=tmp_path)
    report = json.loads((run / "robustness" / "robustness.json").read_text())
    wc = report["worst_case"]["acc"]["0.3"]
    assert set(report["apgd"]["acc"]) == {"ce", "dlr"} and report["apgd"]["iterations"] == 10
    assert wc <= min(report["pgd"]["acc"]["0.3"], *(v["0.3"] for v in report["apgd"]["acc"].values()))
    assert "APGD-DLR-10" in proc.stdout and "worst case" in proc.stdout
