"""Command-line options of the ``data_prep`` scripts, in one style: ``--snake_case`` like the training CLI's
``--data.init_args.n_synthetic``, every option with help text and its default shown.

This module imports nothing heavy (no torch, lightning, albumentations): a script builds its parser from it, parses
its arguments (so ``--help`` answers at once) and only then imports the code that does the work.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["MAX_UNKNOWN_FRACTION", "MISMATCH_RULES", "add_option", "prep_parser", "seg_prep_parser"]

MISMATCH_RULES = ("resize", "skip")
# a label file with a larger fraction of pixels whose ids the dataset does not define is an error
MAX_UNKNOWN_FRACTION = 0.25


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except ``None`` (the help text then says what an unset option means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def prep_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of a script's docstring ``doc`` that lists every option's default."""
    description = doc.strip().splitlines()[0] if doc and doc.strip() else None
    return argparse.ArgumentParser(description=description, formatter_class=_DefaultsFormatter)


def add_option(
    parser: argparse.ArgumentParser | argparse._ActionsContainer, name: str, *, old: str | None = None, **kwargs: Any
) -> argparse.Action:
    """``--name`` with ``kwargs`` (help is required); ``old``, an earlier spelling such as ``--n-synthetic``, still
    parses into the same value but is left out of ``--help``."""
    if not kwargs.get("help"):
        raise ValueError(f"option --{name} needs a help text")
    action = parser.add_argument(f"--{name}", **kwargs)
    if old is not None:
        same = {k: v for k, v in kwargs.items() if k in ("action", "type", "nargs", "choices", "const", "metavar")}
        parser.add_argument(old, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **same)
    return action


def seg_prep_parser(dataset: str, doc: str | None) -> argparse.ArgumentParser:
    """The shared options of ``data_prep/{gta5,cityscapes,synthia}.py``."""
    parser = prep_parser(doc)
    add_option(parser, "root", required=True, help="the unpacked official download")
    add_option(parser, "out", help="output folder; unset: <root>/syn2real/<num_classes>classes")
    add_option(parser, "num_classes", type=int, choices=(19, 16, 13), default=19,
               help="19 Cityscapes classes, or the 16/13-class SYNTHIA protocols")
    add_option(parser, "mismatch", choices=MISMATCH_RULES, default="resize",
               help="label size != image size: nearest-neighbour resize of the label, or skip the pair")
    add_option(parser, "workers", type=int, default=0, help="processes converting labels (0: this one)")
    add_option(parser, "allow_missing", action="store_true", help="skip images without labels (and vice versa)")
    add_option(parser, "skip_corrupt", action="store_true", help="count and skip unreadable files")
    add_option(parser, "max_unknown_fraction", type=float, default=MAX_UNKNOWN_FRACTION,
               help="largest fraction of a label file's pixels whose ids the dataset does not define (they become "
                    "255 = ignore, counted per id in summary.json); a file above it is an error")
    if dataset == "cityscapes":
        add_option(parser, "splits", nargs="+", choices=("train", "val"), default=["train", "val"],
                   help="splits to convert (test has no public labels)")
    return parser
