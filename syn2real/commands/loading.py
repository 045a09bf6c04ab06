"""Loading for the commands that use a trained run: the device to run on, and a method rebuilt from its config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_trained", "resolve_device"]

#: keys of a fit's saved ``<run>/config.yaml`` that belong to the fit/test command line, not to the model or data
RUN_KEYS = ("ckpt_path", "weights_only")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name (``cpu``, ``cuda:1``) as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_trained(prog: str, configs: list[str], ckpt: str | os.PathLike, overrides: list[str]) -> tuple[Any, Any]:
    """(method with the checkpoint's weights, datamodule), built from ``--config FILE [overrides]`` exactly as
    ``syn2real fit`` builds them, without a logger and without training. ``prog`` names the command in errors."""
    from syn2real.cli import Syn2RealCLI
    from syn2real.models.checkpoint import load_model_weights

    if not Path(ckpt).is_file():
        raise SystemExit(f"{prog}: checkpoint {ckpt} does not exist")
    config_args = [a for c in configs for a in ("--config", _without_run_keys(c))] + list(overrides)
    argv, sys.argv = sys.argv, sys.argv[:1]  # the arguments are given explicitly; keep LightningCLI from warning
    try:
        cli = Syn2RealCLI(args=[*config_args, "--trainer.logger", "false"], run=False)
    finally:
        sys.argv = argv
    load_model_weights(cli.model.model, str(ckpt))
    return cli.model, cli.datamodule


def _without_run_keys(config: str) -> str:
    """``config`` as given, or, for a run's saved ``config.yaml`` (which records the fit's ``ckpt_path`` and
    ``weights_only``), the same YAML without those command-line keys, so that ``--config <run>/config.yaml`` rebuilds
    the run's method."""
    import yaml

    path = Path(config)
    if not path.is_file():
        return config  # jsonargparse reports the missing file
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return config  # let the parser name the problem
    if not isinstance(loaded, dict) or not any(key in loaded for key in RUN_KEYS):
        return config
    for key in RUN_KEYS:
        loaded.pop(key, None)
    return yaml.safe_dump(loaded, sort_keys=False)
