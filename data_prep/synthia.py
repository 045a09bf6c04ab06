"""Convert the official SYNTHIA-RAND-CITYSCAPES download into Cityscapes train-id label maps and a list file.

Usage: python data_prep/synthia.py --root /data/synthia --num_classes 16 [--out DIR] [--mismatch resize|skip]
                                   [--workers N] [--allow_missing] [--skip_corrupt] [--max_unknown_fraction 0.25]

Expects the official layout (9,400 frames, 1280x760): <root>/RGB/0000000.png and <root>/GT/LABELS/0000000.png,
the labels 16-bit PNGs with several channels, the SYNTHIA class id in the first (R) channel (read with OpenCV).
Classes map to the Cityscapes train ids as in AdaptSegNet/CBST (see syn2real/data/seg_labels.py); --num_classes
16 or 13 keeps the SYNTHIA->Cityscapes protocol's classes. Writes to <out> (default <root>/syn2real/<N>classes):
labels/0000000.png (8-bit, ids 0..N-1, 255 ignore), train.txt ("<image> <label>" a line, relative to <out>),
classes.txt and summary.json. Prepare Cityscapes with the same --num_classes.
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
    return seg_prep_parser("synthia", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then convert (heavy imports only after parsing, so ``--help`` answers at once)."""
    args = parser().parse_args(argv)
    from syn2real.data.seg_prep import run_prep  # the library entry point is prepare_synthia

    return run_prep("synthia", args)


if __name__ == "__main__":
    sys.exit(main())
