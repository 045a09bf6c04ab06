"""MinEnt (AdvEnt's entropy minimisation), one class for both tasks: the loss by hand on a classification and a
segmentation batch, and the claim at small scale: training on it lowers the target's prediction entropy where
source-only training does not."""

from __future__ import annotations

import pytest
import torch

from syn2real.losses.output_space import entropy_loss
from syn2real.methods import MinEnt, SourceOnly
from syn2real.methods.optim import OptimConfig, deeplab_optim
from syn2real.models.heads import NetworkConfig
from syn2real.models.segmentation import SegNetworkConfig
from syn2real.tasks import Classification, Segmentation

CLS = Classification(NetworkConfig(backbone="digits_cnn", num_classes=4, in_chans=1))
SEG = Segmentation(SegNetworkConfig(backbone="resnet18", num_classes=4, in_chans=1, aspp_rates=[1, 2], freeze_bn=False,
                                    backbone_kwargs={"out_indices": [0, 1]}))  # the embedded benchmark's network


def _batch(seg: bool, seed: int = 0, n: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1, 28, 28)
    x_s, x_t = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) + 0.5
    y_s = torch.randint(0, 4, (n, 28, 28) if seg else (n,), generator=g)
    return {"source": (x_s, y_s), "target": (x_t, torch.full_like(y_s, -1))}


@pytest.mark.parametrize("task", [CLS, SEG], ids=["classification", "segmentation"])
def test_minent_loss_is_the_supervised_loss_plus_weighted_target_entropy(task) -> None:
    torch.manual_seed(0)
    method = MinEnt(task=task, entropy_weight=0.5)
    batch = _batch(task is SEG)
    out = method.compute_losses(batch)
    levels = task.levels(method.model, batch["target"][0])
    entropy = entropy_loss(levels[0].softmax(dim=1))
    supervised = task.loss(method, task.levels(method.model, batch["source"][0]), batch["source"][1])
    torch.testing.assert_close(out["target_entropy"], entropy.detach())
    torch.testing.assert_close(out["loss"], supervised + 0.5 * entropy)
    assert out[f"source_{task.accuracy_name}"].shape == ()
    assert method.optim_cfg == (deeplab_optim() if task is SEG else OptimConfig())


def test_minent_lowers_target_entropy_on_both_tasks() -> None:
    """From the same briefly trained source model (at initialisation the predictions are uniform and the entropy's
    gradient vanishes), a few more steps of MinEnt end with a lower target entropy than source-only steps (λ_ent
    10 instead of the paper's 0.001 so that four steps show it)."""
    for task in (CLS, SEG):
        batch = _batch(task is SEG, seed=1, n=8)
        torch.manual_seed(0)
        start = SourceOnly(task=task)
        opt = torch.optim.Adam(start.model.parameters(), lr=1e-3)
        for _ in range(6):
            opt.zero_grad()
            start.compute_losses(batch)["loss"].backward()
            opt.step()
        ends = {}
        for cls, kwargs in ((SourceOnly, {}), (MinEnt, {"entropy_weight": 10.0})):
            method = cls(task=task, **kwargs)
            method.model.load_state_dict(start.model.state_dict())
            opt = torch.optim.Adam(method.model.parameters(), lr=1e-3)
            for _ in range(4):
                opt.zero_grad()
                method.compute_losses(batch)["loss"].backward()
                opt.step()
            with torch.no_grad():
                ends[cls.__name__] = float(entropy_loss(task.levels(method.model, batch["target"][0])[0].softmax(1)))
        assert ends["MinEnt"] < 0.5 * ends["SourceOnly"], (task.kind, ends)


def test_negative_entropy_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="entropy_weight must be >= 0"):
        MinEnt(task=CLS, entropy_weight=-0.1)
