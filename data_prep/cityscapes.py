"""Convert the official Cityscapes download into train-id label maps and train/val list files.

Usage: python data_prep/cityscapes.py --root /data/cityscapes [--out DIR] [--num_classes 19|16|13]
                                      [--splits train val] [--mismatch resize|skip] [--workers N]
                                      [--max_unknown_fraction 0.25]

Expects the official layout (leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip unpacked into <root>):
<root>/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png and
<root>/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png (8-bit label ids; the test split has no public labels
and is ignored). Writes to <out> (default <root>/syn2real/<N>classes): labels/{train,val}/<city>/<name>.png
(8-bit, train ids 0..N-1, 255 ignore), train.txt and val.txt ("<image> <label>" a line, relative to <out>),
classes.txt and summary.json. Use --num_classes 16 or 13 for the SYNTHIA->Cityscapes protocols.
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
    return seg_prep_parser("cityscapes", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then convert (heavy imports only after parsing, so ``--help`` answers at once)."""
    args = parser().parse_args(argv)
    from syn2real.data.seg_prep import run_prep  # the library entry point is prepare_cityscapes

    return run_prep("cityscapes", args)


if __name__ == "__main__":
    sys.exit(main())
