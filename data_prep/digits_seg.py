"""Write the synthetic->real digits segmentation benchmark (canvases of rendered / MNIST digits) as list files.

Usage: python data_prep/digits_seg.py --root DIR --n-synthetic 6000 --seed 0 [--size 48] [--digits-per-canvas 2]
                                      [--val-size 500] [--workers N] [--preview out.png]
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

from syn2real.data.digits_seg import MANIFEST, prepare_digits_segmentation, preview


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prepare (or reuse) the benchmark, print counts and pixel fractions, preview."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="output folder (default: the syn2real cache)")
    parser.add_argument("--n-synthetic", type=int, default=6000, help="number of synthetic canvases")
    parser.add_argument("--seed", type=int, default=0, help="rendering, layout and split seed")
    parser.add_argument("--size", type=int, default=48, help="canvas side in pixels")
    parser.add_argument("--digits-per-canvas", type=int, default=2, help="digits pasted on each canvas")
    parser.add_argument("--val-size", type=int, default=500, help="real canvases held out for evaluation")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    parser.add_argument("--preview", type=Path, default=None, help="write a PNG of canvases and labels here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

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
