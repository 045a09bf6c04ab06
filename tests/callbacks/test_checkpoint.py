"""syn2real's checkpoint layer: readable errors for bad checkpoint files, no NaN/inf state written as a good
checkpoint, a resume that applies the command's optimiser values (issue 20, items 3, 5, 7)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim.lr_scheduler import LambdaLR

from syn2real.callbacks.checkpoint import (
    AtomicCheckpointIO, ResumeOverrides, RunCheckpoint, changed_hparams, non_finite_entry,
)
from syn2real.io import read_checkpoint
from syn2real.core.guard import describe_checkpoint


class Opaque:
    """A class a weights-only load refuses to unpickle."""


def test_read_checkpoint_names_the_file_and_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 3}, good)
    assert read_checkpoint(good, "x", require=("state_dict",))["global_step"] == 3

    with pytest.raises(FileNotFoundError, match=r"checkpoint .*missing.ckpt does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt", "x")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*truncated.ckpt: .*truncated, corrupt"):
        read_checkpoint(truncated, "x")
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": Opaque()}, pickled)
    with pytest.raises(ValueError) as err:
        read_checkpoint(pickled, "x")
    msg = str(err.value)
    assert f"cannot read checkpoint {pickled}: it holds pickled Python objects" in msg and "Opaque" in msg
    assert "weights_only=False" not in msg and "allowlist" not in msg  # no advice to turn the safe load off
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.ones(1)}, foreign)
    with pytest.raises(ValueError, match=r"foreign.ckpt: not a syn2real/Lightning checkpoint .*\(no 'state_dict'; found \['weights'\]"):
        AtomicCheckpointIO().load_checkpoint(foreign)


def test_non_finite_entry_finds_buffers_too() -> None:
    bn = torch.nn.BatchNorm1d(3)
    assert non_finite_entry(bn.state_dict()) is None
    bn.running_var[1] = float("inf")
    assert non_finite_entry(bn.state_dict()) == "running_var"
    assert non_finite_entry({"steps": torch.tensor(5), "w": torch.tensor([float("nan")])}) == "w"


def _fake_trainer(module: torch.nn.Module, step: int = 4) -> SimpleNamespace:
    return SimpleNamespace(lightning_module=module, global_step=step, is_global_zero=True,
                           strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision))


def test_a_state_with_nan_or_inf_is_not_written_over_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", lambda self, trainer, path: written.append(path))
    callback = RunCheckpoint(dirpath=str(tmp_path))
    module = torch.nn.BatchNorm1d(2)
    module.running_var[0] = float("inf")
    with pytest.warns(UserWarning, match=r"last.ckpt not written at global step 4: 'running_var' holds NaN/inf"):
        callback._save_checkpoint(_fake_trainer(module), str(tmp_path / "last.ckpt"))
    assert written == []
    module.nan_guard = False  # --nan_guard.enabled false: written as it is
    callback._save_checkpoint(_fake_trainer(module), str(tmp_path / "last.ckpt"))
    module.nan_guard = True
    module.running_var[0] = 1.0
    callback._save_checkpoint(_fake_trainer(module), str(tmp_path / "last.ckpt"))
    assert len(written) == 2


def test_nan_guard_message_calls_a_checkpoint_good_only_when_it_is(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.ckpt", tmp_path / "bad.ckpt"
    bn = torch.nn.BatchNorm1d(2)
    torch.save({"state_dict": bn.state_dict()}, good)
    bn.running_var[0] = float("inf")
    torch.save({"state_dict": bn.state_dict()}, bad)
    assert describe_checkpoint(str(good)).startswith(f"the last good checkpoint is {good}")
    text = describe_checkpoint(str(bad))
    assert "not good" in text and "'running_var' holds NaN/inf" in text and "last good checkpoint is" not in text
    assert describe_checkpoint(None) == "no checkpoint was written before it"


def test_changed_hparams_lists_nested_differences() -> None:
    saved = {"_class_path": "x.A", "optim": {"lr": 0.01, "betas": [0.9, 0.999]}, "lambda_adv": 0.1}
    now = {"_class_path": "x.A", "optim": {"lr": 0.001, "betas": [0.9, 0.999]}, "lambda_adv": 0.1, "new": 1}
    changes = changed_hparams(saved, now)
    assert list(changes) == ["new", "optim.lr"] and changes["optim.lr"] == (0.01, 0.001)
    assert changed_hparams(saved, saved) == {}


def _restored_and_fresh(lr_old: float, lr_new: float, schedule: bool):
    """An optimiser as Lightning restores it (the checkpoint's lr, 3 scheduler steps done) and the command's groups."""
    params = [torch.nn.Parameter(torch.zeros(1))]

    def build(lr: float):
        opt = torch.optim.SGD([{"params": params, "lr": lr, "name": "head"}], lr=lr, momentum=0.9, weight_decay=1e-4)
        sched = LambdaLR(opt, lambda step: 0.5 ** step) if schedule else None
        return opt, sched

    fresh_opt, _ = build(lr_new)
    fresh_opt.param_groups[0]["weight_decay"] = 5e-4  # the command also changed the weight decay
    fresh = [[{k: v for k, v in g.items() if k != "params"} for g in fresh_opt.param_groups]]
    opt, sched = build(lr_old)
    for _ in range(3):
        opt.step()
        if sched is not None:
            sched.step()
    return opt, sched, fresh


def test_resume_applies_a_new_base_lr_at_the_schedules_current_factor() -> None:
    opt, sched, fresh = _restored_and_fresh(0.1, 0.01, schedule=True)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    callback = ResumeOverrides()
    callback._fresh = fresh
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    applied = callback._apply_optimiser_settings(trainer)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.01 * 0.5 ** 3) and group["initial_lr"] == 0.01 and sched.base_lrs == [0.01]
    assert group["weight_decay"] == 5e-4 and group["momentum"] == 0.9
    assert any("base lr 0.1 -> 0.01" in a for a in applied) and any("weight_decay" in a for a in applied)
    sched.step()  # the schedule goes on at the new scale
    assert group["lr"] == pytest.approx(0.01 * 0.5 ** 4)


def test_resume_without_schedule_takes_the_new_lr_and_unchanged_values_stay_bit_identical() -> None:
    opt, _, fresh = _restored_and_fresh(0.1, 0.02, schedule=False)
    callback = ResumeOverrides()
    callback._fresh = fresh
    callback._apply_optimiser_settings(SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[]))
    assert opt.param_groups[0]["lr"] == 0.02
    opt, sched, fresh = _restored_and_fresh(0.1, 0.1, schedule=True)
    fresh[0][0]["weight_decay"] = 1e-4
    lr = opt.param_groups[0]["lr"]
    callback._fresh = fresh
    assert callback._apply_optimiser_settings(
        SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])) == []
    assert opt.param_groups[0]["lr"] == lr


def _falling_score_fit(tmp_path: Path, **checkpoint: object) -> RunCheckpoint:
    """3 epochs of a one-parameter model whose monitored score is best after epoch 0 and falls after."""
    import lightning as L

    class Falling(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return (self.w - batch).pow(2).mean()

        def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            self.log("score", -float(self.current_epoch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=2)
    callback = RunCheckpoint(dirpath=str(tmp_path), monitor="score", mode="max", filename="best", **checkpoint)
    trainer = L.Trainer(max_epochs=3, callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer.fit(Falling(), data, data)
    return callback


@pytest.mark.parametrize("on_train_epoch_end", [False, True])
def test_last_ckpt_holds_the_final_weights_when_the_best_epoch_came_early(
    tmp_path: Path, on_train_epoch_end: bool
) -> None:
    _falling_score_fit(tmp_path, save_on_train_epoch_end=on_train_epoch_end)
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert best["epoch"] == 0 and best["global_step"] == 2
    assert last["epoch"] == 2 and last["global_step"] == 6  # the final weights, not a copy of the best
    assert not torch.equal(best["state_dict"]["w"], last["state_dict"]["w"])
