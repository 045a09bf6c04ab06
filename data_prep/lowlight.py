"""Build an unpaired low-light / normal-light set (plus a paired test set) from any folder of photos.

Usage:
    python data_prep/lowlight.py --input PHOTOS --output data/lowlight [--test_fraction 0.25] [--seed 0]
                                 [--split disjoint|shared] [--gamma 2 3.5] [--exposure 0.5 0.9]
                                 [--photons 200 1000] [--read_noise 0.002 0.008]
    python data_prep/lowlight.py --from_packages --output data/lowlight_photos
        # the real photos that scikit-image and foolbox ship (24), collected and then darkened

Writes train/low, train/normal (disjoint scenes by default), test/low, test/reference and manifest.json;
see syn2real/data/lowlight.py for the darkening model. Re-running keeps what exists (resumable).

Public unpaired sets need no conversion (give their folders to the data module): EnlightenGAN's training set
(trainA = low, trainB = normal), LOL for paired evaluation (eval15/low, eval15/high).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import syn2real  # noqa: F401
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syn2real.data.prep_cli import add_option, prep_parser


def parser() -> argparse.ArgumentParser:
    """This script's options (the darkening model's ranges: see syn2real/data/lowlight.py)."""
    p = prep_parser(__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    add_option(src, "input", help="folder of normal-light photos (searched recursively)")
    add_option(src, "from_packages", action="store_true",
               help="use the real photos scikit-image and foolbox ship, collected into <output>/photos")
    add_option(p, "output", required=True, help="folder to write train/{low,normal}, test/{low,reference} into")
    add_option(p, "test_fraction", type=float, default=0.25,
               help="fraction of the photos held out as the paired test set")
    add_option(p, "seed", type=int, default=0, help="seed of the split and of every image's darkening parameters")
    add_option(p, "split", choices=["disjoint", "shared"], default="disjoint",
               help="disjoint: half the training photos darkened, the other half kept clean (no scene in both); "
                    "shared: every training photo in both sets")
    add_option(p, "gamma", type=float, nargs=2, default=(2.0, 3.5), metavar=("LOW", "HIGH"),
               help="range of the tone-curve exponent (larger: darker mid-tones)")
    add_option(p, "exposure", type=float, nargs=2, default=(0.5, 0.9), metavar=("LOW", "HIGH"),
               help="range of the exposure factor applied after the tone curve")
    add_option(p, "photons", type=float, nargs=2, default=(200.0, 1000.0), metavar=("LOW", "HIGH"),
               help="range of the photo-electrons at full scale (shot noise; fewer: noisier)")
    add_option(p, "read_noise", type=float, nargs=2, default=(0.002, 0.008), metavar=("LOW", "HIGH"),
               help="range of the read-noise standard deviation (intensities in [0, 1])")
    return p


def main(argv: list[str] | None = None) -> int:
    """Collect or read the photos, darken them into the unpaired layout and print what was written."""
    args = parser().parse_args(argv)
    from syn2real.data.lowlight import collect_package_photos, prepare_lowlight  # after parsing

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = Path(args.output)
    photos = Path(args.input) if args.input else out / "photos"
    if args.from_packages:
        print(f"collected {len(collect_package_photos(photos))} photos into {photos}")
    summary = prepare_lowlight(
        photos, out, args.test_fraction, args.seed, args.split, args.gamma, args.exposure, args.photons, args.read_noise
    )
    written = ", ".join(f"{k} {v}" for k, v in sorted(summary.written.items())) or "nothing new"
    print(f"written: {written}; kept (already there): {summary.kept}; unreadable: {len(summary.failed)} -> {out}")
    if summary.failed:
        print("unreadable photos (skipped): " + ", ".join(summary.failed[:20]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
