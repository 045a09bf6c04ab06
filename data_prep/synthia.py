"""Convert the official SYNTHIA-RAND-CITYSCAPES download into Cityscapes train-id label maps and a list file.

Usage: python data_prep/synthia.py --root /data/synthia --num_classes 16 [--out DIR] [--mismatch resize|skip]
                                   [--workers N] [--allow_missing] [--skip_corrupt]

Expects the official layout (9,400 frames, 1280x760): <root>/RGB/0000000.png and <root>/GT/LABELS/0000000.png,
the labels 16-bit PNGs with several channels, the SYNTHIA class id in the first (R) channel (read with OpenCV).
Classes map to the Cityscapes train ids as in AdaptSegNet/CBST (see syn2real/data/seg_labels.py); --num_classes
16 or 13 keeps the SYNTHIA->Cityscapes protocol's classes. Writes to <out> (default <root>/syn2real/<N>classes):
labels/0000000.png (8-bit, ids 0..N-1, 255 ignore), train.txt ("<image> <label>" a line, relative to <out>),
classes.txt and summary.json. Prepare Cityscapes with the same --num_classes.
Reruns keep labels already converted. Exit code 2 on a layout error (the message names the missing folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import syn2real  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syn2real.data.seg_prep import cli_main, prepare_synthia  # noqa: F401  (the library entry point)


def main(argv: list[str] | None = None) -> int:
    return cli_main("synthia", argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
