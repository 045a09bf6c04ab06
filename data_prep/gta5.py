"""Convert the official GTA5 download into Cityscapes train-id label maps and a list file.

Usage: python data_prep/gta5.py --root /data/gta5 [--out DIR] [--num_classes 19|16|13] [--mismatch resize|skip]
                                [--workers N] [--allow_missing] [--skip_corrupt]

Expects the official layout (Richter et al., 24,966 frames): <root>/images/00001.png and <root>/labels/00001.png,
the labels 8-bit palette PNGs whose index values are Cityscapes *label ids* (read as indices, never as colours).
Writes to <out> (default <root>/syn2real/<N>classes): labels/00001.png (8-bit, train ids 0..N-1, 255 ignore),
train.txt ("<image> <label>" a line, relative to <out>), classes.txt and summary.json. A few GTA5 labels differ in
size from their image: each is reported, and resized to the image (nearest neighbour, default) or skipped.
Reruns keep labels already converted. Exit code 2 on a layout error (the message names the missing folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import syn2real  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syn2real.data.seg_prep import cli_main, prepare_gta5  # noqa: F401  (prepare_gta5: the library entry point)


def main(argv: list[str] | None = None) -> int:
    return cli_main("gta5", argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
