"""Rotation/translation examples: the warp, worst-of-k picks the worst candidate, the grid finds a planted weakness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.spatial import (
    RandomSpatial,
    WorstOfK,
    grid_attack,
    spatial_grid,
    transform_batch,
    vote_predict,
)


def dot_image(row: int = 4, col: int = 4, size: int = 9) -> torch.Tensor:
    """A normalised (mean = std = 0.5) black image with one white pixel."""
    pixels = torch.zeros(1, 1, size, size)
    pixels[0, 0, row, col] = 1.0
    return (pixels - 0.5) / 0.5


class PlantedWeakness(nn.Module):
    """Says class 0 unless the white pixel sits at (row 5, col 6), i.e. the centre dot shifted by δx = +2, δy = +1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x[:, 0, 5, 6] > 0.5).float()
        return torch.stack([5.0 * (1 - hit), 5.0 * hit], dim=1)


def test_warp_identity_shift_and_black_border() -> None:
    x = dot_image()
    assert torch.allclose(transform_batch(x, torch.zeros(1), torch.zeros(1, 2)), x, atol=1e-5)
    moved = transform_batch(x, torch.zeros(1), torch.tensor([[2.0, 1.0]]))
    assert moved[0, 0, 5, 6] > 0.99 and moved[0, 0, 4, 4] < -0.99
    # rotating about the centre keeps the centre pixel; the corners uncovered by a 45° turn are black (pixel 0)
    ones = torch.ones(1, 1, 9, 9)
    rotated = transform_batch(ones, torch.tensor([45.0]), torch.zeros(1, 2))
    assert rotated[0, 0, 4, 4] > 0.99 and rotated[0, 0, 0, 0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="angles"):
        transform_batch(x, torch.zeros(2), torch.zeros(1, 2))


def test_grid_attack_finds_the_planted_worst_transform() -> None:
    angles, shifts = spatial_grid(max_angle=30, n_angles=31, max_shift=3, n_shifts=7)  # 1-px translation steps
    assert angles.shape == (31 * 49,) and shifts.shape == (31 * 49, 2)
    assert spatial_grid()[0].shape == (775,)  # the paper's 5 x 5 x 31
    model = PlantedWeakness()
    x = torch.cat([dot_image(), dot_image(0, 0)])  # the second image's dot can never reach (5, 6) in +-3 px
    out = grid_attack(model, x, torch.zeros(2, dtype=torch.long), angles, shifts, chunk=100)
    assert out["correct"].tolist() == [False, True]
    assert out["worst_shift"][0].tolist() == [2.0, 1.0]
    early = grid_attack(model, x, torch.zeros(2, dtype=torch.long), angles, shifts, chunk=100, early_stop=True)
    assert early["correct"].tolist() == [False, True]


def test_early_stop_grid_gives_the_same_verdict_with_fewer_forwards() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3))
    with torch.no_grad():
        model[3].bias.copy_(torch.tensor([4.0, 0.0, 0.0]))  # mostly class 0: some images survive every transform
    x, y = torch.randn(12, 1, 12, 12), torch.zeros(12, dtype=torch.long)
    y[:3] = 1
    counts: dict[str, int] = {}
    for mode in (False, True):
        handle = model.register_forward_hook(lambda m, i, o, k=mode: counts.__setitem__(str(k), counts.get(str(k), 0) + i[0].shape[0]))
        out = grid_attack(model, x, y, chunk=300, early_stop=mode)
        handle.remove()
        counts[f"correct{mode}"] = out["correct"].tolist()  # type: ignore[assignment]
    assert counts["correctTrue"] == counts["correctFalse"]
    assert any(counts["correctTrue"]) and not all(counts["correctTrue"])
    assert counts["True"] < counts["False"] == 12 * 775


def test_worst_of_k_returns_the_highest_loss_candidate_in_one_batched_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 7 * 7, 4))
    x, y = torch.randn(5, 1, 9, 9), torch.randint(0, 4, (5,))
    attack = WorstOfK(k=6, max_angle=30, max_shift=2)
    bn = model[1]
    stats = bn.running_mean.clone()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    torch.manual_seed(1)
    out, labels = attack(model, x, y)
    assert calls == [30] and model.training and torch.equal(bn.running_mean, stats) and torch.equal(labels, y)
    torch.manual_seed(1)
    angles, shifts = attack.sample(30, x.device)
    candidates = transform_batch(x.repeat(6, 1, 1, 1), angles, shifts).view(6, 5, 1, 9, 9)
    with torch.no_grad():
        model.eval()
        losses = torch.stack([F.cross_entropy(model(candidates[j]), y, reduction="none") for j in range(6)])
    expected = candidates[losses.argmax(dim=0), torch.arange(5)]
    assert torch.allclose(out, expected, atol=1e-6)


def test_random_spatial_and_vote() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 9, 9), torch.zeros(4, dtype=torch.long)
    out, labels = RandomSpatial(mode="concat")(nn.Identity(), x, y)
    assert out.shape == (8, 1, 9, 9) and torch.equal(out[:4], x) and labels.shape == (8,)
    assert vote_predict(PlantedWeakness(), torch.cat([dot_image()] * 3), n=5, max_shift=0.0, max_angle=0.0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="k >= 1"):
        WorstOfK(k=0)
