"""Write the synthetic->real digits segmentation benchmark (canvases of rendered / MNIST digits) as list files.

Usage: python data_prep/digits_seg.py --root DIR --n_synthetic 6000 --seed 0 [--size 48] [--digits_per_canvas 2]
                                      [--val_size 500] [--workers N] [--preview out.png]
"""

from __future__ import annotations

import argparse
import json
import logging
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
    add_option(p, "root", type=Path, default=None, help="output folder; unset: the syn2real cache")
    add_option(p, "n_synthetic", old="--n-synthetic", type=int, default=6000, help="number of synthetic canvases")
    add_option(p, "seed", type=int, default=0, help="rendering, layout and split seed")
    add_option(p, "size", type=int, default=48, help="canvas side in pixels")
    add_option(p, "digits_per_canvas", old="--digits-per-canvas", type=int, default=2,
               help="digits pasted on each canvas")
    add_option(p, "val_size", old="--val-size", type=int, default=500, help="real canvases held out for evaluation")
    add_option(p, "workers", type=int, default=None, help="rendering processes; unset: all cores")
    add_option(p, "preview", type=Path, default=None, help="write a PNG of canvases and labels here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prepare (or reuse) the benchmark, print counts and pixel fractions, preview."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from syn2real.data.digits_seg import MANIFEST, prepare_digits_segmentation, preview  # after parsing

    paths = prepare_digits_segmentation(
        args.root,
        n_synthetic=args.n_synthetic,
        seed=args.seed,
        size=args.size,
        digits_per_canvas=args.digits_per_canvas,
        val_size=args.val_size,
        workers=args.workers,
    )
    manifest = json.loads((paths["synthetic"].parents[1] / MANIFEST).read_text())
    for key, path in paths.items():
        pixels = manifest["pixels"][key]
        total = sum(pixels.values())
        print(f"{key}: {path} ({manifest['counts'][key]} canvases)")
        print("  pixels %: " + ", ".join(f"{name}={100 * n / total:.2f}" for name, n in pixels.items()))
    if args.preview is not None:
        print(f"preview: {preview(paths, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
