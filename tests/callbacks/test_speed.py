"""--speed.* (channels-last, torch.compile) and gradient clipping of manually optimised methods."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, config_args, tiny_digits_args

from syn2real.callbacks.speed import SpeedOptions
from syn2real.methods import ADDA, SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)


def _batches(n: int = 2, size: int = 8) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(0)
    data = [
        {"source": (torch.randn(size, 1, 28, 28, generator=gen), torch.randint(0, 10, (size,), generator=gen)),
         "target": (torch.randn(size, 1, 28, 28, generator=gen), torch.full((size,), -1))}
        for _ in range(n)
    ]
    return torch.utils.data.DataLoader(data, batch_size=None)


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, **kwargs)


class RecordingSourceOnly(SourceOnly):
    def compute_losses(self, batch):
        self.seen_channels_last = batch["source"][0].is_contiguous(memory_format=torch.channels_last)
        return super().compute_losses(batch)


def test_channels_last_converts_weights_and_batches() -> None:
    method = RecordingSourceOnly(task=Classification(NET))
    params = {id(p) for p in method.model.parameters()}
    trainer = _trainer(callbacks=[SpeedOptions(channels_last=True)])
    trainer.fit(method, train_dataloaders=_batches())
    assert trainer.global_step == 2 and method.seen_channels_last
    convs = [p for p in method.model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert {id(p) for p in method.model.parameters()} == params  # the optimizer's parameters, converted in place


def test_compiled_run_checkpoint_has_plain_keys_and_loads_uncompiled(tmp_path: Path) -> None:
    """Through the CLI; the ``aot_eager`` backend exercises the wrapping without a C++ build (inductor is the
    default and behaves the same for parameter names)."""
    from syn2real.command import main

    run = tmp_path / "run"
    main(["fit", *config_args(REPO / "configs" / "digits" / "source_only.yaml"), *tiny_digits_args(max_steps=2),
          "--trainer.default_root_dir", str(run),
          "--speed.channels_last", "true", "--speed.compile", "true", "--speed.compile_backend", "aot_eager"])
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    fresh = SourceOnly(task=Classification(network=NET))
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(3, 1, 28, 28)
    assert torch.isfinite(fresh.eval()(x)).all()


class ClipRecordingADDA(ADDA):
    """Records each optimizer step's total gradient norm after the clipping hook ran."""

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.norms = [*getattr(self, "norms", []), float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])))]


@pytest.mark.parametrize("grad_clip", [None, 1e-3])
def test_grad_clip_bounds_manual_gradient_norm(grad_clip: float | None) -> None:
    L.seed_everything(0)
    method = ClipRecordingADDA(task=Classification(NET), gate_accuracy=None, grad_clip=grad_clip)
    trainer = _trainer()
    trainer.fit(method, train_dataloaders=_batches(n=1))
    assert len(method.norms) == 2  # discriminator, then encoder
    if grad_clip is None:
        assert min(method.norms) > 1e-2  # without clipping the bound below would not hold
    else:
        assert max(method.norms) <= grad_clip * (1 + 1e-3)


def test_trainer_clipping_is_refused_for_manual_methods_with_a_pointer() -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="manual optimization"):
        _trainer(gradient_clip_val=1.0).fit(ADDA(task=Classification(network=NET)), train_dataloaders=_batches(n=1))


def test_compile_wraps_the_networks_in_place() -> None:
    from syn2real.methods import CyCADA
    from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig

    method = CyCADA(task=Classification(network=NET), lambda_semantic=0.0, generator=GeneratorConfig(channels=1, ngf=4, n_blocks=1),
                    discriminator=PatchDiscriminatorConfig(ndf=4))
    keys = list(method.state_dict())
    SpeedOptions(compile=True, compile_backend="aot_eager").setup(None, method, "fit")
    for name in ("model", "generator_st", "generator_ts", "discriminator_t", "discriminator_s"):
        assert getattr(method, name)._compiled_call_impl is not None, name
    assert method.teacher._compiled_call_impl is None  # frozen networks are left alone
    assert list(method.state_dict()) == keys
