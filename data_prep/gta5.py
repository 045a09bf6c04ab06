"""Convert the official GTA5 download into Cityscapes train-id label maps and a list file.

Usage: python data_prep/gta5.py --root /data/gta5 [--out DIR] [--num_classes 19|16|13] [--mismatch resize|skip]
                                [--workers N] [--allow_missing] [--skip_corrupt] [--max_unknown_fraction 0.25]

Expects the official layout (Richter et al., 24,966 frames): <root>/images/00001.png and <root>/labels/00001.png,
the labels 8-bit palette PNGs whose index values are Cityscapes *label ids* (read as indices, never as colours).
Writes to <out> (default <root>/syn2real/<N>classes): labels/00001.png (8-bit, train ids 0..N-1, 255 ignore),
train.txt ("<image> <label>" a line, relative to <out>), classes.txt and summary.json. A few GTA5 labels differ in
size from their image: each is reported, and resized to the image (nearest neighbour, default) or skipped.
Label ids the dataset does not define become 255 and are counted per id in summary.json (a file with more than
--max_unknown_fraction of them is an error). Reruns keep labels already converted. Exit code 2 on a layout error
(the message names the missing folder). Every option: --help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import syn2real  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syn2real.data.prep_cli import seg_prep_parser


def parser() -> argparse.ArgumentParser:
    """This script's options (the shared ones of the segmentation data_prep scripts)."""
    return seg_prep_parser("gta5", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then convert (heavy imports only after parsing, so ``--help`` answers at once)."""
    args = parser().parse_args(argv)
    from syn2real.data.seg_prep import run_prep  # the library entry point is prepare_gta5

    return run_prep("gta5", args)


if __name__ == "__main__":
    sys.exit(main())
