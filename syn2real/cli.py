"""``syn2real fit|validate|test|predict --config FILE [overrides]``: the Lightning side of the ``syn2real`` command.

A ``LightningCLI`` subclass that adds, for every run: ``metrics.json`` in ``trainer.default_root_dir``
(``--metrics.*``), a checkpoint callback writing to ``<default_root_dir>/checkpoints`` (``--checkpoint.*``),
sample grids / confusion matrices / per-class tables for W&B (``--media.*``), ``predictions.csv`` from
``predict`` (``--predictions.*``), deep ensembles and MC dropout for evaluations (``--uncertainty.*``), the NaN/inf
guard (``--nan_guard.*``), channels-last and ``torch.compile`` (``--speed.*``),
atomic checkpoint writes with ``weights_only=True`` loads, the global random states in every checkpoint
(:class:`~syn2real.callbacks.checkpoint.ResumeRNG`), and a W&B offline run inside the run directory
when the config uses :class:`~syn2real.loggers.SafeWandbLogger` (resumed, not restarted, by ``--ckpt_path``).

Mid-epoch checkpoints: ``--checkpoint.every_n_train_steps N`` writes ``last.ckpt`` atomically every ``N`` steps; a run
killed at any moment continues with ``--ckpt_path last`` to the same final weights and metrics as an uninterrupted
run of the same seed (``--trainer.deterministic true``), training loaders included (:mod:`syn2real.data.resumable`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from syn2real.callbacks.checkpoint import (
    LIGHTNING_CHECKPOINT, AtomicCheckpointIO, ResumeOverrides, ResumeRNG, RunCheckpoint,
)
from syn2real.callbacks.metrics_json import MetricsJSON
from syn2real.callbacks.nan_guard import NaNGuard
from syn2real.callbacks.predictions import PredictionsCSV
from syn2real.callbacks.speed import SpeedOptions
from syn2real.callbacks.uncertainty import PredictiveUncertainty
from syn2real.callbacks.wandb_media import WandbMedia
from syn2real.io import read_checkpoint
from syn2real.run_dir import (
    EVAL_DIR, RunDirectoryError, archive_file, evaluation_dir, find_last_checkpoint, refuse_overwrite,
)

__all__ = ["Syn2RealCLI"]


EVALUATIONS = ("validate", "test", "predict")
EVAL_DIR_ENV = "SYN2REAL_EVAL_DIR"  # the evaluation directory rank 0 chose, inherited by the processes it launches


class RunConfigSaver(SaveConfigCallback):
    """``config.yaml`` of the command in its records directory; the one a resumed fit replaces is moved to
    ``config_history/`` first, so every command's config survives."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = trainer.log_dir  # a broadcast: every rank asks
            if trainer.is_global_zero and log_dir is not None:
                archive_file(os.path.join(log_dir, self.config_filename))
        super().setup(trainer, pl_module, stage)


def _external_launch() -> bool:
    """Started as one of several processes by an outside launcher (torchrun, srun), which start every rank at once;
    Lightning's own DDP launcher instead starts ranks > 0 from rank 0, which passes them its choices."""
    world = os.environ.get("WORLD_SIZE", "1")
    tasks = os.environ.get("SLURM_NTASKS", "1")
    return ("RANK" in os.environ and world.isdigit() and int(world) > 1) or (tasks.isdigit() and int(tasks) > 1)


def _launch_rank() -> int:
    """This process's rank as set by a launcher before any process group exists; 0 for a plain start."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


# Hyper-parameters of checkpoints written before methods took an injected task (syn2real <= 0.1 before the task
# split): the network (and segmentation's inference / aux_weight) sat on the method, segmentation had its own classes.
_SEGMENTATION_CLASSES = {
    "syn2real.methods.SegSourceOnly": "syn2real.methods.SourceOnly",
    "syn2real.methods.SegSelfTraining": "syn2real.methods.SelfTraining",
    "syn2real.methods.SegCyCADA": "syn2real.methods.CyCADA",
    "syn2real.methods.OutputSpaceAdaptation": "syn2real.methods.OutputSpaceAdaptation",
}


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The saved hyper-parameters of a checkpoint in today's layout: a checkpoint written before the task split
    (``network`` on the method, ``SegSourceOnly``/``SegSelfTraining``/``SegCyCADA``) gets ``task:`` with its network,
    and segmentation's ``inference``/``aux_weight`` move into it; today's hyper-parameters are returned unchanged.
    The weights (``model.*``) did not move, so only the hyper-parameters need this."""
    if "task" in hparams or "network" not in hparams or "_class_path" not in hparams:
        return hparams
    hparams = dict(hparams)
    class_path = str(hparams["_class_path"])
    segmentation = class_path in _SEGMENTATION_CLASSES
    hparams["_class_path"] = _SEGMENTATION_CLASSES.get(class_path, class_path)
    task_args: dict[str, Any] = {"network": hparams.pop("network")}
    if segmentation:
        for key in ("inference", "aux_weight"):
            if key in hparams:
                task_args[key] = hparams.pop(key)
    hparams.pop("ignore_index", None)  # CyCADA's segmentation-only argument: the task's ignore index now
    task = "syn2real.tasks.Segmentation" if segmentation else "syn2real.tasks.Classification"
    hparams["task"] = {"class_path": task, "init_args": task_args}
    return hparams


def _explicit_model_keys(args: list[str]) -> list[str]:
    """The ``--model.*`` keys written on the command line (not in a config file)."""
    keys = []
    for arg in args:
        if arg.startswith("--model.") or arg.startswith("--model="):
            keys.append(arg[2:].split("=", 1)[0])
    return keys


class Syn2RealCLI(LightningCLI):
    """LightningCLI with syn2real's run-directory conventions (unknown keys still fail loudly).

    Records: ``fit`` writes into ``trainer.default_root_dir`` and refuses one that holds an earlier run's results
    unless it resumes it; ``validate``/``test``/``predict`` write into ``<run>/eval/<stage>-<time>`` (or
    ``--eval_name``). Resume: ``--ckpt_path last`` (an error when there is nothing to resume), ``--ckpt_path auto``
    (resume if there is a checkpoint, else start), or a file; a fit resumes with the values of this command
    (:class:`~syn2real.callbacks.checkpoint.ResumeOverrides`), an evaluation builds the checkpoint's model except for
    ``--model.*`` values given on the command line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import syn2real.data  # noqa: F401  (register datamodules for class_path resolution)
        import syn2real.methods  # noqa: F401

        given = kwargs.get("args")
        self._argv = [str(a) for a in given] if isinstance(given, (list, tuple)) else sys.argv[1:]
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(MetricsJSON, "metrics")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(WandbMedia, "media")
        # before predictions: its predictor swap must precede PredictionsCSV's on_predict_start
        parser.add_lightning_class_args(PredictiveUncertainty, "uncertainty")
        parser.add_lightning_class_args(PredictionsCSV, "predictions")
        parser.add_lightning_class_args(NaNGuard, "nan_guard")
        parser.add_lightning_class_args(SpeedOptions, "speed")
        parser.add_argument(
            "--eval_name", type=Optional[str], default=None,
            help="validate/test/predict: write this evaluation's records to <run>/eval/<eval_name> (default: "
                 "<stage>-<YYYYmmdd-HHMMSS>); the training run's own files are never touched",
        )

    def _parse_ckpt_path(self) -> None:
        """A checkpoint file given to ``--ckpt_path``: read with errors naming it; for ``fit`` the command's config is
        used as given (differences are reported at restore), for an evaluation the checkpoint's hyper-parameters build
        the model, except the ``--model.*`` values written on the command line."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "auto", "hpc"):
            return
        if not Path(ckpt_path).is_file():
            raise RunDirectoryError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        checkpoint = read_checkpoint(ckpt_path, LIGHTNING_CHECKPOINT, require=("state_dict",))
        if subcommand == "fit":
            return
        hparams = upgrade_hparams(dict(checkpoint.get("hyper_parameters") or {}))
        hparams.pop("_instantiator", None)
        explicit = _explicit_model_keys(self._argv)
        if not hparams or "model" in explicit or "model.class_path" in explicit:
            return  # no saved hyper-parameters, or the user named the model class: the command's model config
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        given = self.config[subcommand].clone()
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        for key in explicit:
            for candidate in (key, key.replace("model.", "model.init_args.", 1)):
                try:
                    value = given[candidate]
                except (KeyError, TypeError):
                    continue
                self.config[subcommand][candidate] = value
                break

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or os.getcwd()
        # known before the trainer exists, so `--ckpt_path last` finds <root>/checkpoints/last.ckpt
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        self._resolve_resume(config)
        if self.subcommand == "fit":
            if config.get("eval_name") is not None:
                raise RunDirectoryError("--eval_name names an evaluation's directory (validate/test/predict); a fit "
                                        "writes into --trainer.default_root_dir")
            if config.get("ckpt_path") is None:
                refuse_overwrite(root, config.checkpoint.dirpath, config.metrics.filename)
        elif self.subcommand in EVALUATIONS:
            root = self._evaluation_root(root, config)
            config.trainer.default_root_dir = root
        logger = config.trainer.logger
        for entry in logger if isinstance(logger, list) else [logger]:
            init_args = getattr(entry, "init_args", None)
            if str(getattr(entry, "class_path", "")).endswith("SafeWandbLogger"):
                if self.subcommand in EVALUATIONS and init_args.save_dir not in (None, str(root)):
                    # its wandb_run_id would replace the training's: the evaluation's W&B files stay in its directory
                    print(f"syn2real {self.subcommand}: trainer.logger.init_args.save_dir {init_args.save_dir} not "
                          f"used: an evaluation's W&B files go to {root}", file=sys.stderr)
                    init_args.save_dir = None
                if init_args.save_dir is None:
                    init_args.save_dir = str(root)
                # a resumed fit logs into the W&B run it continues (id kept in <root>/wandb_run_id)
                if self.subcommand == "fit" and config.get("ckpt_path") is not None:
                    init_args.continue_run = True

    def _resolve_resume(self, config: Any) -> None:
        """``--ckpt_path auto`` becomes ``last`` when a last checkpoint exists, else nothing; ``last`` with nothing to
        resume is an error instead of Lightning's warning and a silent fresh start."""
        ckpt_path = config.get("ckpt_path")
        if ckpt_path not in ("last", "auto"):
            return
        if ckpt_path == "auto" and self.subcommand != "fit":
            raise RunDirectoryError(f"--ckpt_path auto is for fit (resume if possible); {self.subcommand} needs the "
                                    "checkpoint to evaluate: --ckpt_path last, best or a file")
        found = find_last_checkpoint(config.checkpoint.dirpath)
        if ckpt_path == "auto":
            config.ckpt_path = "last" if found is not None else None
            if found is None:
                print(f"--ckpt_path auto: no checkpoint in {config.checkpoint.dirpath}, starting a new run",
                      file=sys.stderr)
        elif found is None:
            raise RunDirectoryError(
                f"--ckpt_path last: no last checkpoint in {config.checkpoint.dirpath} (expected last.ckpt, written "
                "by --checkpoint.save_last and --checkpoint.every_n_train_steps N); check --trainer.default_root_dir, "
                "or use --ckpt_path auto to resume when there is a checkpoint and start afresh when there is none"
            )

    def _evaluation_root(self, run_dir: str, config: Any) -> str:
        """The directory of this evaluation's records (see :mod:`syn2real.run_dir`), the same in every process."""
        chosen = os.environ.get(EVAL_DIR_ENV)
        if chosen:
            return chosen
        name = config.get("eval_name")
        if _external_launch():
            if name is None:
                raise RunDirectoryError(
                    f"{self.subcommand} under a multi-process launcher (torchrun, srun): give --eval_name so that "
                    "every process writes into the same evaluation directory"
                )
            if _launch_rank() != 0:
                return str(Path(run_dir) / EVAL_DIR / name)
        target = str(evaluation_dir(run_dir, self.subcommand, name))
        os.environ[EVAL_DIR_ENV] = target  # processes launched from here (Lightning's DDP launcher) inherit it
        print(f"syn2real {self.subcommand}: records of this evaluation go to {target}", file=sys.stderr)
        return target

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:  # only the processes this command launched inherit its evaluation directory
            os.environ.pop(EVAL_DIR_ENV, None)

    def after_fit(self) -> None:
        """Evaluate the final weights when training stopped after the last validation (e.g. ``max_steps``
        mid-epoch), so ``metrics.json`` always describes the model that was saved last."""
        if getattr(self.model, "last_eval_step", None) == self.trainer.global_step or self.trainer.interrupted:
            return
        for callback in self.trainer.callbacks:
            if isinstance(callback, MetricsJSON):
                callback.next_stage = "fit"
        self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(hasattr(p, "save_checkpoint") for p in plugins):
            plugins.append(AtomicCheckpointIO())
        config["plugins"] = plugins
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        for extra in (ResumeRNG, ResumeOverrides):
            if not any(isinstance(c, extra) for c in [*callbacks, *configured]):
                callbacks = [*callbacks, extra()]
        return super()._instantiate_trainer(config, callbacks)


if __name__ == "__main__":  # `python -m syn2real.cli ARGS` is `syn2real ARGS` (the command lives in syn2real.command)
    from syn2real.command import main

    main()
