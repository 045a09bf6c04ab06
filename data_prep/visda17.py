"""Check an unpacked VisDA-2017 classification download and write the list files the configs read.

Usage: python data_prep/visda17.py --root /data/visda17 [--out /data/visda17/lists] [--max_per_class N --seed 0]

Expects <root>/train/{image_list.txt,<class>/...} and <root>/validation/{image_list.txt,<class>/...} (the official
layout); writes <out>/visda17_train.txt, <out>/visda17_validation.txt (paths relative to <root>/<split>) and
<out>/visda17_classes.txt, then prints the per-class counts. Use them with
  --data.init_args.source "{root: <root>/train, format: list, list_file: <out>/visda17_train.txt}"
(the configs default to the official image_list.txt, which is equivalent for the full splits).
"""

from __future__ import annotations

import argparse
import json
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
    add_option(p, "root", required=True, help="the unpacked VisDA-2017 classification folder")
    add_option(p, "out", help="where to write the list files; unset: <root>/lists")
    add_option(p, "splits", nargs="+", default=["train", "validation"], help="splits (sub-folders of root) to list")
    add_option(p, "max_per_class", old="--max-per-class", type=int, default=None,
               help="seeded subset of this many images per class (quick runs); unset: every image")
    add_option(p, "seed", type=int, default=0, help="seed of the --max_per_class subset")
    add_option(p, "no_file_check", old="--no-file-check", action="store_true",
               help="skip checking that every listed file exists")
    return p


def main(argv: list[str] | None = None) -> int:
    """Write the list files and print the per-class counts as JSON."""
    args = parser().parse_args(argv)
    from syn2real.data.visda import write_visda17_lists  # after parsing: --help answers at once

    out = Path(args.out) if args.out else Path(args.root) / "lists"
    report = write_visda17_lists(args.root, out, tuple(args.splits), args.max_per_class, args.seed,
                                 check_files=not args.no_file_check)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
