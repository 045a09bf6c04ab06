"""Frozen image translators from a CyCADA checkpoint: its generators loaded for other stages and commands.

:func:`load_generator` reads a generator (``st``: source→target, ``ts``: target→source) with its pixel space;
:class:`SourceTranslator` wraps G_ST in data space for CyCADA's feature level (``source_translator`` of ``ADDA`` and
``OutputSpaceAdaptation``) and ``syn2real translate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from syn2real.io import read_checkpoint
from syn2real.models.gan import GeneratorConfig, PixelSpace, ResnetGenerator

__all__ = ["SourceTranslator", "load_generator"]


def load_generator(path: str | Path, direction: Literal["st", "ts"] = "st") -> tuple[ResnetGenerator, PixelSpace]:
    """The generator (``st``: source→target, ``ts``: target→source) of a ``CyCADA`` checkpoint, in eval mode and
    frozen, with the pixel space of its data. Loads with ``weights_only=True``; clear errors for a missing file or
    a checkpoint of another method."""
    file = Path(path)
    if direction not in ("st", "ts"):
        raise ValueError(f"direction must be 'st' (source→target) or 'ts' (target→source), got {direction!r}")
    ckpt = read_checkpoint(file, "the .ckpt of a CyCADA pixel-level run")
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    prefix = f"generator_{direction}."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(
            f"checkpoint {file} has no '{prefix}*' weights; expected the checkpoint of a CyCADA pixel-level run"
        )
    generator = GeneratorConfig(**(hparams.get("generator") or {})).build()
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {file}: generator weights do not fit its hyper-parameters: {err}") from err
    channels = generator.in_channels
    pixels = PixelSpace(hparams.get("pixel_mean") or (0.5,) * channels, hparams.get("pixel_std") or (0.5,) * channels)
    return generator.eval().requires_grad_(False), pixels


class SourceTranslator(nn.Module):
    """The frozen source→target generator G_ST of a ``CyCADA`` checkpoint, in data space (its own pixel space on both
    sides), always in eval mode: CyCADA's feature level translates every source batch with it (``ADDA``,
    ``OutputSpaceAdaptation``, ``source_translator``)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.generator, self.pixels = load_generator(path, "st")

    def train(self, mode: bool = True) -> SourceTranslator:
        return super().train(False)  # frozen: never leaves eval mode

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixels.from_gan(self.generator(self.pixels.to_gan(x)))
