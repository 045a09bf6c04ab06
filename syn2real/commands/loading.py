"""Loading for the commands that use a trained run: the device to run on, and a method rebuilt from its config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_trained", "resolve_device"]


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
    config_args = [a for c in configs for a in ("--config", c)] + list(overrides)
    argv, sys.argv = sys.argv, sys.argv[:1]  # the arguments are given explicitly; keep LightningCLI from warning
    try:
        cli = Syn2RealCLI(args=[*config_args, "--trainer.logger", "false"], run=False)
    finally:
        sys.argv = argv
    load_model_weights(cli.model.model, str(ckpt))
    return cli.model, cli.datamodule
