from __future__ import annotations

import math

import pytest
import torch

from syn2real.metrics.validators import (
    EntropyValidator,
    InfoMaxValidator,
    SNDValidator,
    snd_score,
)


def test_entropy_and_infomax_by_hand() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    ent = EntropyValidator()
    ent.update(probs)
    assert ent.compute().item() == pytest.approx(-math.log(2) / 2, abs=1e-6)
    im = InfoMaxValidator(2)
    im.update(probs)
    marginal = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert im.compute().item() == pytest.approx(marginal - math.log(2) / 2, abs=1e-6)


def test_snd_by_hand() -> None:
    # two identical class-0 predictions and one class-1: rows 0 and 1 put ~all mass on each other
    # (entropy ~ 0); row 2 is uniform over the other two (entropy log 2). Mean = log(2) / 3.
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert snd_score(probs).item() == pytest.approx(math.log(2) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="SND needs"):
        snd_score(torch.ones(1, 3))


def test_streaming_equals_one_shot_and_snd_cap() -> None:
    torch.manual_seed(0)
    probs = torch.randn(40, 5).softmax(1)
    chunks = [EntropyValidator(), InfoMaxValidator(5), SNDValidator()]
    whole = [EntropyValidator(), InfoMaxValidator(5), SNDValidator()]
    for a, b in zip(chunks, whole):
        for part in probs.split(7):
            a.update(part)
        b.update(probs)
        assert a.compute().item() == pytest.approx(b.compute().item(), abs=1e-6)
    capped = SNDValidator(max_samples=10)
    capped.update(probs[:6])
    capped.update(probs[6:])
    assert capped.compute().item() == pytest.approx(snd_score(probs[:10]).item(), abs=1e-6)
    capped.reset()
    capped.update(probs[20:30])
    assert capped.compute().item() == pytest.approx(snd_score(probs[20:30]).item(), abs=1e-6)


def test_confident_diverse_predictions_score_higher() -> None:
    confident = torch.eye(4).repeat(5, 1) * 0.97 + 0.01
    vague = torch.full((20, 4), 0.25)
    for make in (EntropyValidator, lambda: InfoMaxValidator(4)):
        a, b = make(), make()
        a.update(confident)
        b.update(vague)
        assert a.compute() > b.compute()


def test_entropy_validators_keep_float64() -> None:
    # near one-hot p = (1 − 1e-12, 1e-12): float32 would round 1 − 1e-12 to 1 and lose 3.5 % of H
    eps = 1e-12
    h = -(1 - eps) * math.log1p(-eps) - eps * math.log(eps)
    probs = torch.tensor([[1 - eps, eps]] * 4, dtype=torch.float64)
    validator = EntropyValidator()
    validator.update(probs)
    assert validator.compute().item() == pytest.approx(-h, rel=1e-6)
