"""Check an unpacked VisDA-2017 classification download and write the list files the configs read.

Usage: python data_prep/visda17.py --root /data/visda17 [--out /data/visda17/lists] [--max-per-class N --seed 0]

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

from syn2real.data.visda import write_visda17_lists


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the unpacked VisDA-2017 classification folder")
    parser.add_argument("--out", help="where to write the list files (default <root>/lists)")
    parser.add_argument("--splits", nargs="+", default=["train", "validation"])
    parser.add_argument("--max-per-class", type=int, default=None, help="seeded subset per class (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-file-check", action="store_true", help="skip checking that every listed file exists")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.root) / "lists"
    report = write_visda17_lists(args.root, out, tuple(args.splits), args.max_per_class, args.seed,
                                 check_files=not args.no_file_check)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
