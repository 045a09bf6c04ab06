"""File outputs that are never torn: write to a temporary file in the same folder, fsync, ``os.replace``.

Also the cache root shared by the digits renderer and the converted weights.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CheckpointReadError", "atomic_write", "atomic_torch_save", "checkpoint_load_error", "non_finite_entry",
           "read_checkpoint", "write_json_atomic", "cache_root"]


def cache_root() -> Path:
    """``$SYN2REAL_CACHE`` if set, else ``~/.cache/syn2real``."""
    env = os.environ.get("SYN2REAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "syn2real"


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (``os.umask`` can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` leaves: an existing file's own, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path`` and move it over ``path`` only when complete. The file
    gets the permissions a plain ``open()`` would give (umask respected), not the temporary file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # Windows: only the read-only bit exists
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # persist the rename itself where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that leaves either the old file or the complete new one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike) -> None:
    """JSON (indented, sorted keys) written atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be used: truncated, corrupt, pickled objects, or not the expected content."""


def checkpoint_load_error(path: str | os.PathLike, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in one sentence naming the file: pickled Python objects
    (without torch's advice to turn the safe load off), or a truncated, corrupt or foreign file."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in text:
        detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line or "error:" in line), "")
        detail = detail.split(" was not an allowed global")[0].split(". ")[0]
        return (f"cannot read checkpoint {path}: it holds pickled Python objects that a weights-only load refuses"
                f"{f' ({detail})' if detail else ''}; syn2real loads checkpoints with weights_only=True only and "
                "expects a syn2real/Lightning checkpoint of tensors and plain values")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return (f"cannot read checkpoint {path}: {type(err).__name__}{': ' + first if first else ''} "
            "(truncated, corrupt or not a torch checkpoint)")


def non_finite_entry(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``tensors`` (e.g. a checkpoint's ``state_dict``) with a NaN/inf,
    or None when all are finite."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def read_checkpoint(path: str | os.PathLike, expected: str, map_location: Any = "cpu",
                    require: tuple[str, ...] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` (on CPU by default), with errors naming the file: a missing file says
    what to give (``expected``, e.g. "the .ckpt of a CyCADA pixel-level run"), an unreadable one why
    (:func:`checkpoint_load_error`), one without the keys in ``require`` what it holds instead."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {file} does not exist; give {expected}")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt or foreign file
        raise CheckpointReadError(checkpoint_load_error(file, err)) from err
    missing = [k for k in require if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointReadError(f"cannot read checkpoint {file}: not {expected} (no {', '.join(map(repr, missing))}; "
                                  f"found {found})")
    return checkpoint
