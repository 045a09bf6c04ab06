"""Count the pixels of each class in every label of a prepared segmentation list (what rare-class sampling reads).

Usage: python data_prep/class_stats.py --list /data/gta5/syn2real/19classes/train.txt [--list ...]
                                       [--num_classes N] [--workers N]

data_prep/{gta5,cityscapes,synthia}.py already write <list stem>_class_stats.json beside each list they write; this
script computes it for a tree prepared before they did, or for any list of "<image> <label>" lines (8-bit train-id
PNGs, 255 ignore), without converting anything again. Writes <folder>/<list stem>_class_stats.json (train.txt ->
train_class_stats.json) and prints each class's pixel frequency. Exit code 2 on a layout error. Every option: --help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import syn2real  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syn2real.data.prep_cli import add_option, prep_parser


def parser() -> argparse.ArgumentParser:
    """This script's options."""
    p = prep_parser(__doc__)
    add_option(p, "list", dest="lists", type=Path, action="append", required=True,
               help="a segmentation list file (repeat for several)")
    add_option(p, "num_classes", type=int, default=None,
               help="number of classes; unset: the lines of classes.txt beside the list")
    add_option(p, "workers", type=int, default=0, help="processes reading labels (0: this one)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then count (heavy imports only after parsing, so ``--help`` answers at once)."""
    args = parser().parse_args(argv)
    from syn2real.data.class_stats import compute_class_stats, write_class_stats
    from syn2real.data.datasets import CorruptImageError, DatasetLayoutError

    for list_file in args.lists:
        try:
            stats = compute_class_stats(list_file, args.num_classes, args.workers)
        except (DatasetLayoutError, CorruptImageError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        out = write_class_stats(list_file, stats=stats)
        names = stats["classes"] or [str(c) for c in range(stats["num_classes"])]
        print(f"{list_file}: {stats['images']} labels -> {out}")
        print("  pixel frequency %: " + ", ".join(
            f"{name}={100 * f:.3f}" for name, f in zip(names, stats["frequency"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
