"""Mixed precision: the GAN/adversarial losses compute in float32, and bf16-mixed fits stay finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, config_args, tiny_digits_args

from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.losses import adversarial as adv
from syn2real.losses import gan, output_space, self_training

g = torch.Generator().manual_seed(0)
D = torch.randn(4, 1, 6, 6, generator=g) * 3  # discriminator patch logits
D2 = torch.randn(4, 1, 6, 6, generator=g) * 3
IMG = [torch.rand(2, 3, 8, 8, generator=g) * 2 - 1 for _ in range(4)]
LOGITS = torch.randn(4, 5, generator=g) * 4
SEG = torch.randn(2, 5, 6, 6, generator=g) * 4
LABELS = torch.randint(0, 5, (4,), generator=g)
DOM = torch.randn(4, 1, generator=g) * 3
DOM_T = torch.randn(3, 1, generator=g) * 3

LOSSES = {
    "lsgan_discriminator": (gan.lsgan_discriminator_loss, (D, D2)),
    "lsgan_generator": (gan.lsgan_generator_loss, (D,)),
    "relativistic_discriminator": (gan.relativistic_lsgan_discriminator_loss, (D, D2)),
    "relativistic_generator": (gan.relativistic_lsgan_generator_loss, (D, D2)),
    "cycle": (gan.cycle_loss, tuple(IMG)),
    "identity": (gan.identity_loss, tuple(IMG)),
    "task_cross_entropy": (lambda z: task_cross_entropy(z, LABELS), (LOGITS,)),
    "domain_adversarial": (adv.domain_adversarial_loss, (DOM, DOM_T)),
    "adda_target": (adv.adda_target_loss, (DOM_T,)),
    "cdan": (adv.cdan_loss, (DOM, DOM_T)),
    "entropy": (lambda z: adv.entropy(z.softmax(dim=1)).mean(), (LOGITS,)),
    "self_information": (lambda z: output_space.self_information_map(z.softmax(dim=1)).mean(), (SEG,)),
    "entropy_loss": (lambda z: output_space.entropy_loss(z.softmax(dim=1)), (SEG,)),
    "mrkld": (lambda z: self_training.mrkld_loss(z), (LOGITS,)),
    "soft_cross_entropy": (lambda z: self_training.soft_cross_entropy(z, z.detach().float().softmax(dim=1)), (LOGITS,)),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_is_float32_and_matches_fp32_on_bf16_inputs(name: str) -> None:
    fn, inputs = LOSSES[name]
    reference = fn(*inputs)
    half = [x.to(torch.bfloat16).requires_grad_() for x in inputs]
    value = fn(*half)
    assert value.dtype == torch.float32, name
    assert torch.isfinite(value) and float(value.detach()) == pytest.approx(float(reference), rel=2e-2, abs=1e-2), name
    value.backward()  # gradients flow back to the bf16 inputs
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 for x in half)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same inside an autocast region
        assert fn(*[x.to(torch.bfloat16) for x in inputs]).dtype == torch.float32


def test_self_information_of_a_certain_fp16_prediction_is_zero_not_nan() -> None:
    probs = torch.zeros(1, 3, 2, 2, dtype=torch.float16)
    probs[:, 0] = 1.0  # p = 0 elsewhere: log2(0 + 1e-30) would be -inf in fp16 and 0·(-inf) NaN
    out = output_space.self_information_map(probs)
    assert out.dtype == torch.float32 and torch.equal(out, torch.zeros_like(out))


SMALL = tiny_digits_args(max_steps=3)


def test_dann_bf16_mixed_fit_through_the_cli(tmp_path: Path) -> None:
    from syn2real.command import main

    run = tmp_path / "run"
    main(["fit", *config_args(REPO / "configs" / "digits" / "dann.yaml"), *SMALL,
          "--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(run)])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    assert math.isfinite(metrics["target/acc"]) and math.isfinite(metrics["target/validator/entropy"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())


def _fit_cycada(tmp_path: Path, precision: str, accelerator: str = "cpu") -> tuple[L.Trainer, object]:
    from syn2real.methods import CyCADA, SourceOnly
    from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig
    from syn2real.models.heads import NetworkConfig
    from syn2real.tasks import Classification

    net = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)
    torch.manual_seed(1)
    teacher = tmp_path / "source.ckpt"
    torch.save({"state_dict": SourceOnly(task=Classification(network=net)).state_dict()}, teacher)
    L.seed_everything(0)
    method = CyCADA(task=Classification(network=net), teacher_checkpoint=str(teacher), pool_size=3,
                    generator=GeneratorConfig(channels=1, ngf=4, n_blocks=1),
                    discriminator=PatchDiscriminatorConfig(ndf=4))
    gen = torch.Generator().manual_seed(0)
    batches = [
        {"source": (torch.rand(4, 1, 28, 28, generator=gen) * 2 - 1, torch.randint(0, 10, (4,), generator=gen)),
         "target": (torch.rand(4, 1, 28, 28, generator=gen) * 2 - 1, torch.full((4,), -1))}
        for _ in range(3)
    ]
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(method, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return trainer, method


def _assert_finite_run(trainer: L.Trainer, method: torch.nn.Module) -> None:
    assert trainer.global_step == 3 * 3
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    assert {"train/generator_gan", "train/discriminator_loss", "train/task_loss"} <= set(logged)
    assert all(math.isfinite(v) for v in logged.values()), logged
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in method.parameters())


def test_cycada_bf16_mixed_fit_is_finite(tmp_path: Path) -> None:
    trainer, method = _fit_cycada(tmp_path, "bf16-mixed")
    _assert_finite_run(trainer, method)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed (float16 autocast + GradScaler) needs CUDA")
def test_cycada_16_mixed_fit_uses_the_grad_scaler(tmp_path: Path) -> None:
    trainer, method = _fit_cycada(tmp_path, "16-mixed", accelerator="gpu")
    scaler = trainer.precision_plugin.scaler
    assert scaler is not None and scaler.get_scale() > 0  # manual_backward scaled, opt.step() unscaled and stepped
    _assert_finite_run(trainer, method)
