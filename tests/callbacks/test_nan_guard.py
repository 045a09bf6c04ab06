"""The NaN/inf guard: a clear error before a non-finite update, and the last good checkpoint kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, config_args, tiny_digits_args

from syn2real.command import main
from syn2real.methods import SourceOnly
from syn2real.core.guard import NonFiniteLossError, check_finite

NAN_STEP = 2  # global step at which NaNSourceOnly's loss turns NaN (the third training step)


class NaNSourceOnly(SourceOnly):
    """Test double: source-only whose loss is NaN from global step ``NAN_STEP`` on."""

    def compute_losses(self, batch):
        losses = super().compute_losses(batch)
        if self.global_step >= NAN_STEP:
            losses = {**losses, "loss": losses["loss"] * float("nan")}
        return losses


def test_check_finite_names_term_step_method_and_checkpoint() -> None:
    check_finite({"train/loss": torch.tensor(1.0), "train/acc": torch.tensor(0.5)}, 3, "DANN")
    with pytest.raises(NonFiniteLossError) as err:
        check_finite(
            {"train/loss": torch.tensor(1.0), "train/domain_loss": torch.tensor(float("nan"))}, 123, "DANN",
            "runs/x/checkpoints/last.ckpt",
        )
    msg = str(err.value)
    assert "'train/domain_loss' = nan at global step 123 (method DANN)" in msg
    assert "runs/x/checkpoints/last.ckpt" in msg and "bf16" in msg
    with pytest.raises(NonFiniteLossError, match="'g' = inf"):
        check_finite({"g": torch.tensor([1.0, float("inf")], dtype=torch.bfloat16)}, 0, "CyCADA")


SMALL = [
    *config_args(REPO / "configs" / "digits" / "source_only.yaml"),
    *tiny_digits_args(max_steps=6),
    "--checkpoint.monitor", "null",
    "--checkpoint.filename", "null",
    "--checkpoint.every_n_train_steps", "1",
]


def test_nan_stops_fit_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["fit", *SMALL, "--model", f"{__name__}.NaNSourceOnly", "--trainer.default_root_dir", str(run)]
    with pytest.raises(NonFiniteLossError) as err:
        main(args)
    last = run / "checkpoints" / "last.ckpt"
    assert f"'train/loss' = nan at global step {NAN_STEP} (method NaNSourceOnly)" in str(err.value)
    assert str(last) in str(err.value)
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == NAN_STEP  # written after the last good step, not overwritten after the failure
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())

    # the switch: with the guard off the same run trains through the NaN
    main(["fit", *SMALL, "--model", f"{__name__}.NaNSourceOnly", "--trainer.default_root_dir", str(tmp_path / "off"),
          "--nan_guard.enabled", "false", "--trainer.max_steps", "3"])
    assert torch.load(tmp_path / "off" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)


def test_gradient_check_names_first_bad_parameter() -> None:
    from types import SimpleNamespace

    from syn2real.callbacks.nan_guard import NaNGuard
    from syn2real.core.guard import NonFiniteGradientError

    net = _Net()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net.b.weight.grad[0, 0] = float("inf")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), global_step=7, checkpoint_callbacks=[])
    NaNGuard(check_grads=False).on_before_optimizer_step(trainer, net, opt)  # off: nothing checked
    with pytest.raises(NonFiniteGradientError, match="'b.weight' at global step 7"):
        NaNGuard(check_grads=True).on_before_optimizer_step(trainer, net, opt)


def _guard_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One of 2 gloo ranks: step 0 finite on both, step 1 NaN on rank 1 only, step 2 would follow."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    outcome = "finished"
    try:
        for step in range(3):
            bad = rank == 1 and step == 1
            check_finite({"train/loss": torch.tensor(float("nan") if bad else 1.0)}, step, "DANN")
    except NonFiniteLossError as err:
        outcome = str(err)
    finally:
        Path(out_dir, f"rank{rank}.txt").write_text(outcome)
        dist.destroy_process_group()


def test_nan_on_one_rank_stops_every_rank_at_that_step(tmp_path: Path) -> None:
    """Without the all-reduced verdict the healthy rank would block in its next collective forever."""
    import torch.multiprocessing as mp

    ctx = mp.spawn(_guard_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    for _ in range(4):  # join() returns once a process exits; True when all have
        if ctx.join(timeout=30):
            break
    else:
        for proc in ctx.processes:
            proc.kill()
        pytest.fail("a rank hung after the other one's non-finite loss")
    failing, healthy = (tmp_path / "rank1.txt").read_text(), (tmp_path / "rank0.txt").read_text()
    assert "'train/loss' = nan at global step 1 on rank 1 (method DANN)" in failing
    assert "non-finite on another rank at global step 1" in healthy and "rank 0" in healthy
