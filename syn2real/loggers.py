"""Weights & Biases logging that can never stop a training run.

:class:`SafeWandbLogger` wraps Lightning's ``WandbLogger``: offline unless the user asks for online
(``offline: false`` or ``WANDB_MODE=online``); any failure (wandb missing, no disk, bad key, no network)
is reported once as a warning and the logger becomes a no-op while training continues. No call into wandb moves the
global random streams (:func:`~syn2real.core.rng.preserved_rng`): a seeded run trains the same with and
without W&B.

The run id is kept in ``<save_dir>/wandb_run_id``; a run resumed from a checkpoint (``continue_run``, set by the CLI
for ``fit --ckpt_path``) logs into the same W&B run instead of starting a new one.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import sys
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import (
    DummyExperiment,
    Logger,
    rank_zero_experiment,
)
from lightning.pytorch.utilities import rank_zero_only

from syn2real.core.rng import preserved_rng
from syn2real.io import atomic_write

__all__ = ["SafeWandbLogger", "finish_wandb_run"]

log = logging.getLogger(__name__)


class SafeWandbLogger(Logger):
    """``WandbLogger`` that degrades to a warning instead of an exception.

    Args:
        project: W&B project.
        name: run name shown in W&B.
        save_dir: where the offline run is written; the CLI sets it to ``trainer.default_root_dir``.
        offline: ``None`` means offline unless ``WANDB_MODE`` says ``online``.
        group: W&B group (DDP ranks and seeds of one experiment).
        tags: W&B tags.
        log_model: upload checkpoints as artifacts (online only).
        continue_run: reuse the run id saved in ``<save_dir>/wandb_run_id`` by an earlier start (``resume="allow"``);
            the CLI sets it for ``fit --ckpt_path``. An ``id`` given in ``kwargs`` always wins.
        kwargs: passed to ``wandb.init``.
    """

    RUN_ID_FILE = "wandb_run_id"

    def __init__(
        self,
        project: str = "syn2real",
        name: str | None = None,
        save_dir: str | None = None,
        offline: bool | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        log_model: bool = False,
        continue_run: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline").lower() in {"offline", "dryrun", "disabled"}
        self._args = dict(
            project=project, name=name, offline=offline, group=group, tags=tags, log_model=log_model, **kwargs
        )
        self._save_dir = save_dir
        self.continue_run = continue_run
        self._inner: Any = None
        self._disabled = False
        self._warned = False

    # -- failure handling -----------------------------------------------------------------------
    def _disable(self, err: BaseException) -> None:
        self._disabled = True
        self._inner = None
        if not self._warned:
            self._warned = True
            log.warning("W&B logging disabled, training continues: %s: %s", type(err).__name__, err)

    def _logger(self) -> Any:
        with preserved_rng():
            return self._make_logger()

    def _make_logger(self) -> Any:
        if self._disabled:
            return None
        if self._inner is None:
            try:
                from lightning.pytorch.loggers import WandbLogger

                save_dir = self._save_dir or "."
                os.makedirs(save_dir, exist_ok=True)
                args = dict(self._args)
                if args.get("id") is None:
                    args["id"] = self._run_id(save_dir)
                if self.continue_run:
                    args.setdefault("resume", "allow")
                self._inner = WandbLogger(save_dir=save_dir, **args)
                # Lightning always passes anonymous=None, which wandb >= 0.19 answers with a deprecation warning
                # on every run; unset, it means the same
                init = getattr(self._inner, "_wandb_init", None)
                if isinstance(init, dict) and init.get("anonymous", False) is None:
                    del init["anonymous"]
            except Exception as err:  # wandb missing or misconfigured: warn, never stop training
                self._disable(err)
        return self._inner

    def _run_id(self, save_dir: str) -> str:
        """The id saved in ``<save_dir>/wandb_run_id`` when continuing a run, else a new one (saved there)."""
        path = Path(save_dir) / self.RUN_ID_FILE
        if self.continue_run and path.is_file():
            run_id = path.read_text().strip()
            if run_id:
                return run_id
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id shape
        atomic_write(path, lambda f: f.write(f"{run_id}\n".encode()))
        return run_id

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        inner = self._logger()
        if inner is None:
            return None
        try:
            with preserved_rng():
                return getattr(inner, method)(*args, **kwargs)
        except Exception as err:
            self._disable(err)
            return None

    # -- Logger API -----------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._args["project"]

    @property
    def version(self) -> str | None:
        inner = self._inner
        return getattr(inner, "version", None) if inner is not None else None

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @save_dir.setter
    def save_dir(self, value: str | None) -> None:
        if self._inner is not None:
            raise RuntimeError("save_dir cannot change once the W&B run has started")
        self._save_dir = value

    @property
    def enabled(self) -> bool:
        return not self._disabled

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        inner = self._logger()
        if inner is None:
            return DummyExperiment()
        try:
            with preserved_rng():
                return inner.experiment
        except Exception as err:
            self._disable(err)
            return DummyExperiment()

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self._call("log_hyperparams", params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._call("log_metrics", metrics, step)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self._call("log_image", key, images, step, **kwargs)

    @rank_zero_only
    def log_table(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
        self._call("log_table", key=key, columns=columns, data=data, step=step)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._inner is not None:
            self._call("after_save_checkpoint", checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # The run stays open (wandb closes it at process exit): the CLI may validate the final weights
        # after fit, and those metrics belong to the same run.
        if self._inner is not None:
            self._call("finalize", status)


def finish_wandb_run(failed: bool = False) -> None:
    """Finish this process's active W&B run, if any: its closing lines then go through Python to stderr (plain when
    that is not a terminal) instead of coming, coloured, from wandb's service at exit. A failure is only a warning."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None)
    if run is None:
        return
    try:
        with preserved_rng():
            run.finish(exit_code=1 if failed else 0)
    except Exception as err:  # the run's data is on disk already; finishing must not turn success into failure
        log.warning("W&B run could not be finished cleanly: %s: %s", type(err).__name__, err)
