"""Where a command writes its records, so that no command overwrites another's.

A ``fit`` owns ``trainer.default_root_dir`` (the run directory): ``metrics.json``, ``config.yaml``, ``checkpoints/``,
``wandb_run_id`` and the W&B files. ``validate``, ``test`` and ``predict`` of that run write into a directory of their
own below it, ``<run>/eval/<stage>-<YYYYmmdd-HHMMSS>`` or ``<run>/eval/<name>`` (``--eval_name``), and never touch the
training's files. A new ``fit`` refuses a run directory that already holds a run's results; a resumed one
(``--ckpt_path``) continues it, and the ``config.yaml`` it replaces is kept in ``config_history/``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

__all__ = ["EVAL_DIR", "RunDirectoryError", "archive_file", "evaluation_dir", "existing_records",
           "find_last_checkpoint", "refuse_overwrite", "report_dir"]

EVAL_DIR = "eval"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunDirectoryError(ValueError):
    """A command would overwrite another command's records, or a run directory lacks what was asked of it."""


def _stamp(seconds: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(seconds))


def evaluation_dir(run_dir: str | os.PathLike, stage: str, name: str | None = None) -> Path:
    """Create and return a new directory for an evaluation's records: ``<run>/eval/<name>`` when ``name`` is given
    (an error if it exists), else ``<run>/eval/<stage>-<timestamp>`` (``-2``, ``-3``, ... when several start in the
    same second). Creating it is what reserves it, so commands started side by side never share one."""
    parent = Path(run_dir) / EVAL_DIR
    parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        if not _NAME.match(name):
            raise RunDirectoryError(
                f"--eval_name {name!r}: expected a plain directory name (letters, digits, '.', '_', '-'), not a path"
            )
        target = parent / name
        try:
            target.mkdir()
        except FileExistsError:
            raise RunDirectoryError(
                f"--eval_name {name!r}: {target} already exists and holds an earlier evaluation's records; "
                "give another name (or leave --eval_name out for a timestamped directory)"
            ) from None
        return target
    base = f"{stage}-{_stamp()}"
    for n in range(1, 10_000):
        target = parent / (base if n == 1 else f"{base}-{n}")
        try:
            target.mkdir()
        except FileExistsError:
            continue
        return target
    raise RunDirectoryError(f"no free evaluation directory {parent / base}-N")


def report_dir(default: str | os.PathLike, marker: str, given: str | os.PathLike | None = None) -> Path:
    """The folder for a command's report (``marker`` names its main file, e.g. ``robustness.json``), created: ``given``
    if the user gave one (an error if it already holds a report), else ``default``, or ``<default>-<timestamp>`` when
    ``default`` holds an earlier report, which is kept."""
    if given is not None:
        target = Path(given)
        if (target / marker).exists():
            raise RunDirectoryError(f"{target / marker} already exists (an earlier report); give another --output or "
                                    "leave it out for a new folder beside the run")
        target.mkdir(parents=True, exist_ok=True)
        return target
    target, base, n = Path(default), f"{Path(default).name}-{_stamp()}", 1
    while (target / marker).exists():
        target = Path(default).with_name(base if n == 1 else f"{base}-{n}")
        n += 1
    target.mkdir(parents=True, exist_ok=True)
    return target


def existing_records(run_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None,
                     metrics_file: str = "metrics.json") -> list[Path]:
    """The results of an earlier run in ``run_dir`` that a fresh fit would overwrite: its metrics file and its
    checkpoints (``*.ckpt`` in ``checkpoint_dir``, default ``<run>/checkpoints``)."""
    run = Path(run_dir)
    found = [run / metrics_file] if (run / metrics_file).is_file() else []
    ckpts = Path(checkpoint_dir) if checkpoint_dir is not None else run / "checkpoints"
    if ckpts.is_dir():
        found += sorted(ckpts.glob("*.ckpt"))
    return found


def refuse_overwrite(run_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None,
                     metrics_file: str = "metrics.json") -> None:
    """Raise :class:`RunDirectoryError` if a fresh (not resumed) fit in ``run_dir`` would overwrite a run's results."""
    found = existing_records(run_dir, checkpoint_dir, metrics_file)
    if found:
        shown = ", ".join(str(p) for p in found[:4]) + (" ..." if len(found) > 4 else "")
        raise RunDirectoryError(
            f"run directory {run_dir} already holds a run ({shown}); a new fit would overwrite its records. "
            "Resume it with --ckpt_path last, give the new run its own --trainer.default_root_dir, "
            "or move the old run away first"
        )


def find_last_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest ``last*.ckpt`` in ``checkpoint_dir`` (what Lightning's ``--ckpt_path last`` resumes), or None."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.glob("last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def archive_file(path: str | os.PathLike, history: str = "config_history") -> Path | None:
    """Move ``path`` (if it exists) to ``<its folder>/<history>/<stem>-<its mtime>.<ext>`` before it is replaced;
    returns where it went."""
    path = Path(path)
    if not path.is_file():
        return None
    folder = path.parent / history
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{path.stem}-{_stamp(path.stat().st_mtime)}"
    target, n = folder / f"{base}{path.suffix}", 2
    while target.exists():
        target, n = folder / f"{base}-{n}{path.suffix}", n + 1
    shutil.move(str(path), str(target))
    return target
