"""Data-loader throughput (images/s) with the default transforms, for the digits benchmark and a
224 px RGB folder with the ImageNet pipeline (decode + resize + crop + flip + normalise).

    python benchmarks/loader_throughput.py --workers 0 2 --batches 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from syn2real.data import DigitsDataModule, DomainPairDataModule, DomainSpec
from syn2real.data.transforms import imagenet_transforms


def make_rgb_tree(root: Path, classes: int = 4, per_class: int = 64, size: int = 320) -> Path:
    """JPEG photos-like images (smooth noise) in ``<root>/<class>/<i>.jpg``."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.integers(0, 255, size=(size // 8, size // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((size, size), Image.BICUBIC).save(d / f"{i}.jpg", quality=90)
    return root


def measure(dm, batches: int) -> float:
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        batch = batch[0] if isinstance(batch, tuple) else batch
        n += batch["source"][0].shape[0] + batch["target"][0].shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    for w in args.workers:
        dm = DigitsDataModule(n_synthetic=20000, batch_size=64, num_workers=w)
        dm.prepare_data()
        results.append({"data": "digits 28px (in memory)", "workers": w, "images_per_s": round(measure(dm, args.batches))})
    with tempfile.TemporaryDirectory() as tmp:
        root = make_rgb_tree(Path(tmp) / "rgb")
        for w in args.workers:
            dm = DomainPairDataModule(
                source=DomainSpec(str(root)), target=DomainSpec(str(root), format="unlabelled"), batch_size=32,
                num_workers=w, image_mode="RGB", train_transforms=imagenet_transforms(224, train=True),
                eval_transforms=imagenet_transforms(224, train=False),
            )
            results.append({"data": "RGB 320px JPEG -> 224 ImageNet pipeline", "workers": w,
                            "images_per_s": round(measure(dm, min(args.batches, 7)))})
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
