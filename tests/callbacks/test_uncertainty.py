"""``--uncertainty.*``: the evaluation runs the ensemble (the mean of the members' softmax), logs the disagreement,
puts the method's own network back afterwards, and is refused for fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from syn2real.callbacks.uncertainty import PredictiveUncertainty
from syn2real.methods import SourceOnly
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification


def method(seed: int, dropout: float = 0.0) -> SourceOnly:
    torch.manual_seed(seed)
    net = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1, dropout=dropout)
    return SourceOnly(task=Classification(network=net)).eval()


def trainer(callback: PredictiveUncertainty) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, callbacks=[callback])


def test_test_stage_evaluates_the_ensemble_and_restores_the_network(tmp_path: Path) -> None:
    first, second = method(0), method(1)
    member = tmp_path / "member.ckpt"
    torch.save({"state_dict": second.state_dict()}, member)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 1, 28, 28, generator=gen), torch.randint(0, 10, (12,), generator=gen)
    original = first.model
    result = trainer(PredictiveUncertainty(members=[str(member)])).test(
        first, dataloaders=DataLoader(TensorDataset(x, y), batch_size=5), verbose=False)[0]
    assert first.model is original  # the method's own network is back
    with torch.no_grad():
        mean = (first.model(x).softmax(1) + second.model(x).softmax(1)) / 2
    assert result["target/acc"] == pytest.approx(float((mean.argmax(1) == y).float().mean()))
    assert result["target/nll"] == pytest.approx(float(-mean[torch.arange(12), y].log().mean()), rel=1e-4)
    assert result["target/disagreement"] > 0


def test_refused_for_fit_and_for_negative_passes() -> None:
    callback = PredictiveUncertainty(mc_dropout=2)
    with pytest.raises(ValueError, match="not for fit"):
        callback.on_fit_start(None, method(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mc_dropout"):
        PredictiveUncertainty(mc_dropout=-1)
    PredictiveUncertainty().on_fit_start(None, method(0))  # type: ignore[arg-type]  # off: nothing to refuse
