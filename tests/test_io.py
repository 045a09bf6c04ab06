from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from syn2real.callbacks.checkpoint import AtomicCheckpointIO
from syn2real.io import atomic_torch_save, atomic_write, read_checkpoint, write_json_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"a": torch.ones(2)}, target)

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_json_written_atomically(tmp_path: Path) -> None:
    write_json_atomic({"b": 1, "a": 2.5}, tmp_path / "m" / "metrics.json")
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == {"a": 2.5, "b": 1}


def test_checkpoint_io_loads_weights_only_and_names_bad_files(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, tmp_path / "ok.ckpt")
    assert io.load_checkpoint(tmp_path / "ok.ckpt")["epoch"] == 1
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        io.load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.ckpt"):
        io.load_checkpoint(tmp_path / "bad.ckpt")

    # an arbitrary pickled object is refused by weights_only loading
    torch.save({"obj": Path("x")}, tmp_path / "pickle.ckpt")
    with pytest.raises(ValueError, match="weights_only=True"):
        io.load_checkpoint(tmp_path / "pickle.ckpt")


def test_read_checkpoint_names_the_file_and_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist; give the .ckpt of X"):
        read_checkpoint(tmp_path / "missing.ckpt", "the .ckpt of X")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*bad.ckpt"):
        read_checkpoint(tmp_path / "bad.ckpt", "anything")
    torch.save({"obj": Path("x")}, tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match=r"pickled.ckpt: it holds pickled Python objects .*Path") as err:
        read_checkpoint(tmp_path / "pickled.ckpt", "anything")
    assert "weights_only=False" not in str(err.value)  # never the advice to turn the safe load off
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "ok.ckpt")
    assert torch.equal(read_checkpoint(tmp_path / "ok.ckpt", "")["state_dict"]["w"], torch.ones(1))


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"])
def test_written_files_respect_the_umask_like_open(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "raw.bin", lambda f: f.write(b"x"))
        write_json_atomic({"a": 1}, tmp_path / "metrics.json")
        atomic_torch_save({"a": torch.ones(1)}, tmp_path / "last.ckpt")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    for name in ("raw.bin", "metrics.json", "last.ckpt", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_rewriting_a_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json_atomic({"a": 1}, target)
    target.chmod(0o640)
    write_json_atomic({"a": 2}, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and json.loads(target.read_text()) == {"a": 2}
