"""Where each command writes its records: evaluations in their own directory, a fresh fit never over a finished run,
replaced configs kept, ``--ckpt_path last`` / ``auto`` resolution (issue 20, items 1-2)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from jsonargparse import Namespace

from syn2real.cli import Syn2RealCLI, _explicit_model_keys
from syn2real.run_dir import (
    RunDirectoryError, archive_file, evaluation_dir, existing_records, find_last_checkpoint, refuse_overwrite,
    report_dir,
)


def test_evaluation_dir_is_new_timestamped_and_never_reused(tmp_path: Path) -> None:
    first = evaluation_dir(tmp_path, "test")
    assert first.parent == tmp_path / "eval" and re.fullmatch(r"test-\d{8}-\d{6}", first.name)
    second = evaluation_dir(tmp_path, "test")  # same second: a suffix, never the same directory
    assert second != first and first.is_dir() and second.is_dir()  # created, so side-by-side commands never share
    assert not (tmp_path / "metrics.json").exists()


def test_evaluation_name_is_used_once_and_must_be_a_plain_name(tmp_path: Path) -> None:
    assert evaluation_dir(tmp_path, "predict", "holdout") == tmp_path / "eval" / "holdout"
    with pytest.raises(RunDirectoryError, match="holdout.*already exists"):
        evaluation_dir(tmp_path, "predict", "holdout")
    with pytest.raises(RunDirectoryError, match="plain directory name"):
        evaluation_dir(tmp_path, "test", "../elsewhere")


def test_fresh_fit_refuses_a_directory_holding_a_run(tmp_path: Path) -> None:
    refuse_overwrite(tmp_path)  # empty: fine
    (tmp_path / "config.yaml").write_text("x: 1\n")
    refuse_overwrite(tmp_path)  # a config alone (a run that died before any result) is not refused
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert existing_records(tmp_path) == [tmp_path / "checkpoints" / "last.ckpt"]
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match=r"already holds a run .*metrics.json.*last.ckpt.*--ckpt_path last"):
        refuse_overwrite(tmp_path)


def test_archive_file_keeps_every_replaced_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    assert archive_file(config) is None
    config.write_text("a: 1\n")
    first = archive_file(config)
    config.write_text("a: 2\n")
    second = archive_file(config)
    assert not config.exists() and first != second
    assert {first.read_text(), second.read_text()} == {"a: 1\n", "a: 2\n"}
    assert first.parent == tmp_path / "config_history"


def test_find_last_checkpoint_takes_the_newest_last_file(tmp_path: Path) -> None:
    assert find_last_checkpoint(tmp_path / "missing") is None
    (tmp_path / "best.ckpt").write_bytes(b"x")
    assert find_last_checkpoint(tmp_path) is None
    (tmp_path / "last.ckpt").write_bytes(b"x")
    (tmp_path / "last-v1.ckpt").write_bytes(b"x")
    now = time.time()
    os.utime(tmp_path / "last.ckpt", (now - 10, now - 10))
    assert find_last_checkpoint(tmp_path) == tmp_path / "last-v1.ckpt"


def _resume_config(ckpt_path: str, dirpath: Path) -> Namespace:
    return Namespace(ckpt_path=ckpt_path, checkpoint=Namespace(dirpath=str(dirpath)))


def test_ckpt_path_last_without_checkpoint_is_an_error_and_auto_starts_fresh(tmp_path: Path) -> None:
    cli = Syn2RealCLI.__new__(Syn2RealCLI)
    cli.subcommand = "test"
    with pytest.raises(RunDirectoryError, match="--ckpt_path auto is for fit"):  # an evaluation needs its checkpoint
        cli._resolve_resume(_resume_config("auto", tmp_path))
    cli.subcommand = "fit"
    with pytest.raises(RunDirectoryError, match=r"--ckpt_path last: no last checkpoint in .*--ckpt_path auto"):
        cli._resolve_resume(_resume_config("last", tmp_path))
    config = _resume_config("auto", tmp_path)
    cli._resolve_resume(config)
    assert config.ckpt_path is None
    (tmp_path / "last.ckpt").write_bytes(b"x")
    config = _resume_config("auto", tmp_path)
    cli._resolve_resume(config)
    assert config.ckpt_path == "last"
    config = _resume_config("last", tmp_path)
    cli._resolve_resume(config)
    assert config.ckpt_path == "last"


def test_explicit_model_keys_are_those_on_the_command_line() -> None:
    argv = ["test", "--config", "c.yaml", "--model.init_args.optim.lr", "0.1", "--model.dropout=0.2",
            "--data.init_args.batch_size", "3", "--ckpt_path", "x.ckpt"]
    assert _explicit_model_keys(argv) == ["model.init_args.optim.lr", "model.dropout"]


def test_bad_ckpt_path_files_end_the_command_with_a_message_naming_them(tmp_path: Path, capsys) -> None:
    """``--ckpt_path`` goes through the same checkpoint reader as the syn2real commands: a truncated, a pickled and a
    missing file each end ``test`` with one line naming the file (no torch traceback, no advice to load unsafely)."""
    import torch

    from syn2real.command import main

    digits = Path(__file__).resolve().parents[1] / "configs" / "digits"
    config = ["--config", str(digits / "base.yaml"), "--config", str(digits / "source_only.yaml")]
    truncated, pickled = tmp_path / "truncated.ckpt", tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    torch.save({"state_dict": {}, "extra": Namespace(a=1)}, pickled)
    expected = {truncated: "truncated, corrupt or not a torch checkpoint", pickled: "pickled Python objects",
                tmp_path / "missing.ckpt": "no such checkpoint file"}
    for path, why in expected.items():
        with pytest.raises(SystemExit) as err:
            main(["test", *config, "--trainer.logger", "false", "--trainer.default_root_dir",
                  str(tmp_path / "run"), "--ckpt_path", str(path)])
        message = str(err.value.code)
        assert message.startswith("syn2real test: error: ") and str(path) in message and why in message, message
        assert "weights_only=False" not in message
    assert not (tmp_path / "run" / "eval").exists()  # nothing was evaluated, no records directory was made


def test_report_dir_never_replaces_an_earlier_report(tmp_path: Path) -> None:
    first = report_dir(tmp_path / "robustness", "robustness.json")
    assert first == tmp_path / "robustness" and first.is_dir()
    (first / "robustness.json").write_text("{}")
    second = report_dir(tmp_path / "robustness", "robustness.json")
    assert second != first and re.fullmatch(r"robustness-\d{8}-\d{6}", second.name) and second.is_dir()
    (second / "robustness.json").write_text("{}")
    assert report_dir(tmp_path / "robustness", "robustness.json") not in (first, second)
    assert report_dir(tmp_path / "robustness", "robustness.json", tmp_path / "mine") == tmp_path / "mine"
    with pytest.raises(RunDirectoryError, match=r"robustness/robustness.json already exists .*another --output"):
        report_dir(tmp_path / "robustness", "robustness.json", first)
