"""CyCADA pixel level: loss composition, the frozen teacher, optimiser wiring, defaults, checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from syn2real.losses.gan import lsgan_generator_loss, semantic_consistency_loss
from syn2real.methods import ADDA, CyCADA, SourceOnly
from syn2real.tasks import Classification
from syn2real.models.translator import load_generator
from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig
from syn2real.models.heads import NetworkConfig

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)
SMALL_GAN = dict(generator=GeneratorConfig(channels=1, ngf=4, n_blocks=1), discriminator=PatchDiscriminatorConfig(ndf=4))


def batch(n: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    xs, xt = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    return {"source": (xs, torch.randint(0, 10, (n,), generator=g)), "target": (xt, torch.full((n,), -1), torch.arange(n))}


def save_checkpoint(method: torch.nn.Module, path: Path) -> Path:
    """What Lightning writes, reduced to the entries syn2real reads (state_dict, hyper_parameters)."""
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(getattr(method, "hparams", {}))}, path)
    return path


@pytest.fixture
def teacher_ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(1)
    return save_checkpoint(SourceOnly(task=Classification(network=NET)), tmp_path / "source.ckpt")


def test_semantic_loss_needs_a_teacher_and_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        CyCADA(task=Classification(network=NET), **SMALL_GAN)
    with pytest.raises(ValueError, match="lambda_cycle"):
        CyCADA(task=Classification(network=NET), lambda_semantic=0.0, lambda_cycle=-1.0, **SMALL_GAN)
    with pytest.raises(ValueError, match="pixel_mean"):
        CyCADA(task=Classification(network=NET), lambda_semantic=0.0, generator=GeneratorConfig(channels=3, ngf=4, n_blocks=1),
               pixel_mean=[0.5], pixel_std=[0.5])


def test_defaults_are_the_papers(teacher_ckpt: Path) -> None:
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt))
    cfg = method.gan_optim_cfg
    assert (cfg.name, cfg.lr, tuple(cfg.betas), cfg.scheduler, cfg.decay_start) == ("adam", 2e-4, (0.5, 0.999), "linear", 0.5)
    assert (method.lambda_cycle, method.lambda_identity, method.lambda_semantic, method.pool_t.size) == (1.0, 0.0, 1.0, 50)
    assert (method.gen_cfg.ngf, method.gen_cfg.n_blocks, method.disc_cfg.ndf, method.disc_cfg.n_layers) == (64, 9, 64, 3)


def test_teacher_is_loaded_frozen_and_starts_the_task_model(teacher_ckpt: Path) -> None:
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), **SMALL_GAN)
    source = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    for name, value in method.teacher.state_dict().items():
        assert torch.equal(value, source[f"model.{name}"])
        assert torch.equal(method.model.state_dict()[name], value)
    assert not any(p.requires_grad for p in method.teacher.parameters())
    method.train()
    assert not method.teacher.training and method.model.training
    scratch = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), task_init="scratch", **SMALL_GAN)
    assert not torch.equal(next(scratch.model.parameters()), next(scratch.teacher.parameters()))


def test_generator_losses_compose_and_the_teacher_gets_no_gradient(teacher_ckpt: Path) -> None:
    torch.manual_seed(0)
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), lambda_gan=0.5, lambda_semantic=2.0,
                    lambda_identity=0.3, **SMALL_GAN)
    method.train()
    b = batch()
    x_s, y_s = b["source"]
    x_t = b["target"][0]
    images = method.cycle(x_s, x_t)
    for d in (method.discriminator_t, method.discriminator_s):
        d.requires_grad_(False)
    losses = method.generator_losses(images, y_s, x_t)
    expected_sem = semantic_consistency_loss(
        method.teacher(images["fake_t"]), y_s, method.teacher(images["fake_s"]), method.teacher(x_t)
    )
    expected_gan = lsgan_generator_loss(method.discriminator_t(images["fake_t"])) + lsgan_generator_loss(
        method.discriminator_s(images["fake_s"])
    )
    assert losses["semantic"].item() == pytest.approx(expected_sem.item(), rel=1e-5)
    assert losses["gan"].item() == pytest.approx(expected_gan.item(), rel=1e-5)
    total = 0.5 * losses["gan"] + losses["cycle"] + 0.3 * losses["identity"] + 2.0 * losses["semantic"]
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-5)

    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is None for p in method.discriminator_t.parameters())
    assert all(p.grad is None for p in method.model.parameters())  # f_T trains on detached translations only
    assert all(p.grad is not None for p in method.generator_st.parameters())
    assert all(p.grad is not None for p in method.generator_ts.parameters())


def test_semantic_loss_alone_moves_generators_towards_teacher_labels(teacher_ckpt: Path) -> None:
    torch.manual_seed(0)
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), lambda_gan=0.0, lambda_cycle=0.0, **SMALL_GAN)
    method.train()
    b = batch()
    x_s, y_s = b["source"]
    x_t = b["target"][0]
    opt = torch.optim.Adam(list(method.generator_st.parameters()) + list(method.generator_ts.parameters()), lr=1e-2)
    first = None
    for _ in range(40):
        loss = method.generator_losses(method.cycle(x_s, x_t), y_s, x_t)["semantic"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.85 * first


def test_discriminator_loss_uses_detached_pooled_fakes(teacher_ckpt: Path) -> None:
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), pool_size=4, **SMALL_GAN)
    b = batch()
    images = method.cycle(b["source"][0], b["target"][0])
    loss = method.discriminator_loss(images)
    loss.backward()
    assert all(p.grad is None for p in method.generator_st.parameters())
    assert all(p.grad is not None for p in method.discriminator_t.parameters())
    assert len(method.pool_t.images) == 4 and not method.pool_t.images[0].requires_grad


def test_media_rows_and_translation_shape(teacher_ckpt: Path) -> None:
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), **SMALL_GAN)
    media = method.training_media(batch(n=10), max_images=4)
    assert set(media) == {"translation/source", "translation/target"}
    assert media["translation/source"].shape == (3, 4, 1, 28, 28)
    assert 0 <= media["translation/target"].min() and media["translation/target"].max() <= 1
    assert method.translate(batch()["source"][0], "ts").shape == (6, 1, 28, 28)


def test_optimizers_own_disjoint_parameter_sets(teacher_ckpt: Path) -> None:
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), **SMALL_GAN)

    class _Trainer:
        estimated_stepping_batches = 10

    method._trainer = _Trainer()  # type: ignore[assignment]
    (opt_g, opt_d, opt_task), schedulers = method.configure_optimizers()
    owned = [{id(p) for g in opt.param_groups for p in g["params"]} for opt in (opt_g, opt_d, opt_task)]
    assert not (owned[0] & owned[1]) and not (owned[0] & owned[2]) and not (owned[1] & owned[2])
    assert owned[0] == {id(p) for m in (method.generator_st, method.generator_ts) for p in m.parameters()}
    assert owned[2] == {id(p) for p in method.model.parameters()}
    assert not any(id(p) in set().union(*owned) for p in method.teacher.parameters())
    assert len(schedulers) == 3
    lrs = []
    for _ in range(10):
        lrs.append(opt_g.param_groups[0]["lr"])
        schedulers[0].step()
    assert lrs[:6] == [2e-4] * 6 and lrs[9] == pytest.approx(2e-4 * 0.2)  # linear decay over the second half


def test_load_generator_and_adda_translator(teacher_ckpt: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), **SMALL_GAN)
    ckpt = save_checkpoint(method, tmp_path / "cycada.ckpt")
    gen, pixels = load_generator(ckpt, "ts")
    x = batch()["target"][0]
    assert torch.equal(gen(pixels.to_gan(x)), method.generator_ts(x).detach())
    assert not any(p.requires_grad for p in gen.parameters()) and not gen.training
    with pytest.raises(ValueError, match="generator_st"):
        load_generator(teacher_ckpt, "st")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator(tmp_path / "missing.ckpt")

    adda = ADDA(task=Classification(network=NET), source_checkpoint=str(ckpt), source_translator=str(ckpt), align="logits")
    x_s = batch()["source"][0]
    assert torch.allclose(adda.translate_source(x_s), method.translate(x_s, "st").detach(), atol=1e-6)
    # stage 3 starts from f_T (the CyCADA task model), not from the teacher
    for name, value in adda.source_model.state_dict().items():
        assert torch.equal(value, method.model.state_dict()[name])


def _fit(teacher_ckpt: Path, seed: int) -> tuple[CyCADA, dict[str, torch.Tensor]]:
    import lightning as L

    L.seed_everything(seed)
    method = CyCADA(task=Classification(network=NET), teacher_checkpoint=str(teacher_ckpt), pool_size=3, **SMALL_GAN)
    start = {k: v.clone() for k, v in method.state_dict().items()}
    loader = torch.utils.data.DataLoader([batch(n=4, seed=i) for i in range(4)], batch_size=None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(method, train_dataloaders=loader)
    assert trainer.global_step == 3 * 4  # generators, discriminators, task model: one step each per batch
    return method, start


def test_training_is_deterministic_under_a_seed_and_updates_each_network(teacher_ckpt: Path) -> None:
    first, start = _fit(teacher_ckpt, seed=5)
    second, _ = _fit(teacher_ckpt, seed=5)
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for prefix in ("generator_st.", "generator_ts.", "discriminator_t.", "discriminator_s.", "model."):
        assert any(not torch.equal(a[k], start[k]) for k in a if k.startswith(prefix) and a[k].is_floating_point()), prefix
    assert all(torch.equal(a[k], start[k]) for k in a if k.startswith("teacher."))
    assert len(first.pool_t.images) == 3
    assert not torch.equal(_fit(teacher_ckpt, seed=6)[0].state_dict()["generator_st.net.1.weight"],
                           a["generator_st.net.1.weight"])
