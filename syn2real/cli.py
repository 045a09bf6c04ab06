"""``syn2real fit|validate|test|predict --config FILE [overrides]``: the Lightning side of the ``syn2real`` command.

A ``LightningCLI`` subclass that adds, for every run: ``metrics.json`` in ``trainer.default_root_dir``
(``--metrics.*``), a checkpoint callback writing to ``<default_root_dir>/checkpoints`` (``--checkpoint.*``),
sample grids / confusion matrices / per-class tables for W&B (``--media.*``), ``predictions.csv`` from
``predict`` (``--predictions.*``), the NaN/inf guard (``--nan_guard.*``), channels-last and ``torch.compile``
(``--speed.*``),
atomic checkpoint writes with ``weights_only=True`` loads, the global random states in every checkpoint
(:class:`~syn2real.callbacks.checkpoint.ResumeRNG`), and a W&B offline run inside the run directory
when the config uses :class:`~syn2real.loggers.SafeWandbLogger` (resumed, not restarted, by ``--ckpt_path``).

Mid-epoch checkpoints: ``--checkpoint.every_n_train_steps N`` writes ``last.ckpt`` atomically every ``N`` steps; a run
killed at any moment continues with ``--ckpt_path last`` to the same final weights and metrics as an uninterrupted
run of the same seed (``--trainer.deterministic true``), training loaders included (:mod:`syn2real.data.resumable`).
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from syn2real.callbacks.checkpoint import AtomicCheckpointIO, ResumeRNG, RunCheckpoint
from syn2real.callbacks.metrics_json import MetricsJSON
from syn2real.callbacks.nan_guard import NaNGuard
from syn2real.callbacks.predictions import PredictionsCSV
from syn2real.callbacks.speed import SpeedOptions
from syn2real.callbacks.wandb_media import WandbMedia
from syn2real.command import SUBCOMMANDS, main  # the `syn2real` command lives in the light syn2real.command

__all__ = ["SUBCOMMANDS", "Syn2RealCLI", "main"]


class Syn2RealCLI(LightningCLI):
    """LightningCLI with syn2real's run-directory conventions (unknown keys still fail loudly)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import syn2real.data  # noqa: F401  (register datamodules for class_path resolution)
        import syn2real.methods  # noqa: F401

        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(MetricsJSON, "metrics")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(WandbMedia, "media")
        parser.add_lightning_class_args(PredictionsCSV, "predictions")
        parser.add_lightning_class_args(NaNGuard, "nan_guard")
        parser.add_lightning_class_args(SpeedOptions, "speed")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or os.getcwd()
        # known before the trainer exists, so `--ckpt_path last` finds <root>/checkpoints/last.ckpt
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        logger = config.trainer.logger
        for entry in logger if isinstance(logger, list) else [logger]:
            init_args = getattr(entry, "init_args", None)
            if str(getattr(entry, "class_path", "")).endswith("SafeWandbLogger"):
                if init_args.save_dir is None:
                    init_args.save_dir = str(root)
                # a resumed fit logs into the W&B run it continues (id kept in <root>/wandb_run_id)
                if self.subcommand == "fit" and config.get("ckpt_path") is not None:
                    init_args.continue_run = True

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
        if not any(isinstance(c, ResumeRNG) for c in [*callbacks, *configured]):
            callbacks = [*callbacks, ResumeRNG()]
        return super()._instantiate_trainer(config, callbacks)


if __name__ == "__main__":
    main()
