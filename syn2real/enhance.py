"""``syn2real enhance``: low-light images through a trained EnlightenGAN generator, at full resolution, tile by tile.

    syn2real enhance --ckpt runs/enlightengan/checkpoints/last.ckpt --input night_photos --output enhanced

Every image under ``--input`` is enhanced and written to the same relative path under ``--output`` (atomically;
outputs that exist are skipped, so an interrupted run resumes). Large images are processed in tiles of ``--tile``
pixels: each tile is run with ``--overlap`` pixels of real image context on every side and only its centre is kept,
so memory is bounded by the tile size while seams match the whole-image result (tiles start on the generator's
pooling grid). Unreadable images are reported by name and skipped; the command then exits with status 1, as it does
at once for an ``--input`` without image files.

With ``--reference DIR`` (clean originals of the inputs, same relative names, e.g. ``test/reference`` of
``data_prep/lowlight.py``) the command also scores the outputs and the baselines (dark input, adaptive gamma,
histogram equalisation) by PSNR/SSIM, prints a table, writes ``enhance_eval.json`` (mean ± std over images per
method; ``syn2real aggregate`` averages it over seeds), ``enhance_eval_per_image.json`` and, with ``--figure PNG``,
a grid of examples.

The same generator serves as a preprocessing stage (:class:`LowLightEnhance`) that brightens dark target images
before an adaptation method sees them, in any albumentations pipeline of a config::

    target_train_transforms:
      - {name: syn2real.enhance.LowLightEnhance, ckpt: runs/enlightengan/checkpoints/last.ckpt, max_brightness: 0.25}
      - ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import nn

from syn2real.data.datasets import IMAGE_EXTENSIONS, CorruptImageError, load_image, natural_key
from syn2real.io import read_checkpoint, write_json_atomic
from syn2real.models.enlighten import LUMA
from syn2real.translate import resolve_device, save_image

__all__ = ["EnhanceSummary", "LowLightEnhance", "enhance_array", "enhance_folder", "enhance_tiled", "load_enhancer", "main"]

log = logging.getLogger(__name__)


def load_enhancer(path: str | Path) -> nn.Module:
    """The generator of an ``EnlightenGAN`` checkpoint, in eval mode and frozen (``weights_only=True``); clear errors
    for a missing file or a checkpoint of another method."""
    from syn2real.models.enlighten import EnlightenGeneratorConfig

    file = Path(path)
    ckpt = read_checkpoint(file, "the .ckpt of an EnlightenGAN run")
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    weights = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
    if not weights or "discriminator_local" not in str(list(state)):
        raise ValueError(f"checkpoint {file} has no EnlightenGAN generator; expected the checkpoint of an EnlightenGAN run")
    generator = EnlightenGeneratorConfig(**(hparams.get("generator") or {})).build()
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {file}: generator weights do not fit its hyper-parameters: {err}") from err
    return generator.eval().requires_grad_(False)


def _starts(size: int, core: int) -> list[int]:
    return list(range(0, size, core))


@torch.no_grad()
def enhance_tiled(generator: nn.Module, x: torch.Tensor, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """Enhance (B, 3, H, W) images in [-1, 1] with at most ``tile``×``tile`` pixels through the network at once.

    The image is cut into cores of ``tile − 2·overlap`` pixels; each core is computed from a window that adds
    ``overlap`` pixels of context on each side (clipped at the image border, where the whole-image run sees the
    border too) and only the core is kept. ``tile`` and ``overlap`` are rounded down to the generator's pooling
    multiple, so every window lies on the whole image's pooling grid. Output clamped to [-1, 1]."""
    multiple = int(getattr(generator, "multiple", 1))
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return generator(x).clamp(-1.0, 1.0)
    tile = max(multiple, tile // multiple * multiple)
    overlap = overlap // multiple * multiple
    core = tile - 2 * overlap
    if core < multiple:
        raise ValueError(f"tile {tile} must exceed 2 x overlap {overlap} by at least {multiple} pixels")
    out = torch.empty_like(x)
    for y0 in _starts(h, core):
        y1 = min(h, y0 + core)
        wy0, wy1 = max(0, y0 - overlap), min(h, y1 + overlap)
        for x0 in _starts(w, core):
            x1 = min(w, x0 + core)
            wx0, wx1 = max(0, x0 - overlap), min(w, x1 + overlap)
            window = generator(x[..., wy0:wy1, wx0:wx1])
            out[..., y0:y1, x0:x1] = window[..., y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    return out.clamp(-1.0, 1.0)


def enhance_array(
    generator: nn.Module, image: np.ndarray, tile: int = 512, overlap: int = 32, device: torch.device | str = "cpu"
) -> np.ndarray:
    """H×W×3 (or H×W×1, enhanced as grey RGB) uint8 -> the enhanced uint8 image of the same shape."""
    grey = image.ndim == 3 and image.shape[-1] == 1
    rgb = np.repeat(image, 3, axis=-1) if grey else image
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device).float().div(127.5).sub(1.0)
    y = enhance_tiled(generator, x, tile, overlap)
    out = y[0].add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if grey:
        luma = out.astype(np.float32) @ np.array(LUMA, np.float32)
        out = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
    return out


@dataclass
class EnhanceSummary:
    """What an enhance run did (paths relative to the input folder)."""

    enhanced: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"enhanced": self.enhanced, "skipped": self.skipped, "failed": self.failed}


def enhance_folder(
    ckpt: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    tile: int = 512,
    overlap: int = 32,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> EnhanceSummary:
    """Enhance every image under ``input_dir`` into ``output_dir`` (same relative paths); see the module docstring."""
    root, out_root = Path(input_dir), Path(output_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--input {root} is not a directory; give the folder of the images to enhance")
    if out_root.resolve() == root.resolve() or root.resolve() in out_root.resolve().parents:
        raise ValueError(f"--output {out_root} must not be --input {root} or inside it")
    if tile < 16 or overlap < 0:
        raise ValueError(f"--tile must be >= 16 and --overlap >= 0, got {tile}, {overlap}")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: natural_key(str(p.relative_to(root))),
    )
    if not files:
        raise FileNotFoundError(
            f"--input {root} contains no image files (searched recursively for {', '.join(IMAGE_EXTENSIONS)}); "
            "give the folder of the low-light images to enhance"
        )
    dev = resolve_device(device)
    generator = load_enhancer(ckpt).to(dev)
    summary = EnhanceSummary()
    todo = []
    for src in files:
        dst = out_root / src.relative_to(root)
        if dst.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append((src, dst))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="enhance", unit="img")
    for src, dst in todo:
        try:
            image = load_image(src, "RGB")
        except (CorruptImageError, FileNotFoundError) as err:
            log.error("%s", err)
            summary.failed.append(src.relative_to(root).as_posix())
        else:
            save_image(enhance_array(generator, image, tile, overlap, dev), dst)
            summary.enhanced += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    write_json_atomic(
        {"checkpoint": str(ckpt), "input": str(root), "tile": tile, "overlap": overlap, **summary.as_dict()},
        out_root / "enhance_summary.json",
    )
    return summary


_ENHANCERS: dict[str, nn.Module] = {}


class LowLightEnhance(A.ImageOnlyTransform):
    """Preprocessing stage: enhance an RGB (or grey) uint8 image with an EnlightenGAN checkpoint before the rest of
    the pipeline. With ``max_brightness`` only images whose mean luminance (in [0, 1]) is below it are enhanced
    (night or dark scenes); others pass unchanged. The generator is loaded once per process (data-loader workers
    included) and runs on ``device``."""

    def __init__(
        self,
        ckpt: str,
        tile: int = 512,
        overlap: int = 32,
        max_brightness: float | None = None,
        device: str = "cpu",
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"LowLightEnhance: checkpoint {ckpt} does not exist; give an EnlightenGAN .ckpt")
        if max_brightness is not None and not 0.0 < max_brightness <= 1.0:
            raise ValueError(f"LowLightEnhance: max_brightness must be in (0, 1], got {max_brightness}")
        self.ckpt, self.tile, self.overlap = str(ckpt), tile, overlap
        self.max_brightness, self.device = max_brightness, device

    def generator(self) -> nn.Module:
        key = f"{Path(self.ckpt).resolve()}@{self.device}"
        if key not in _ENHANCERS:
            _ENHANCERS[key] = load_enhancer(self.ckpt).to(self.device)
        return _ENHANCERS[key]

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"LowLightEnhance expects uint8 images (put it before Normalize), got {img.dtype}")
        if self.max_brightness is not None and brightness(img) >= self.max_brightness:
            return img
        squeeze = img.ndim == 2
        out = enhance_array(self.generator(), img[..., None] if squeeze else img, self.tile, self.overlap, self.device)
        return out[..., 0] if squeeze else out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ckpt", "tile", "overlap", "max_brightness", "device")


def brightness(image: np.ndarray) -> float:
    """Mean luminance of a uint8 image in [0, 1] (0.299 R + 0.587 G + 0.114 B; grey images as they are)."""
    arr = image.astype(np.float32) / 255.0
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr @ np.array(LUMA, np.float32)
    return float(arr.mean())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="syn2real enhance", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of an EnlightenGAN run")
    parser.add_argument("--input", required=True, help="folder of low-light images (any layout)")
    parser.add_argument("--output", required=True, help="folder to write; the input's layout is kept")
    parser.add_argument("--tile", type=int, default=512, help="largest side processed at once (memory bound)")
    parser.add_argument("--overlap", type=int, default=32, help="context pixels added around each tile")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--reference", help="clean originals of the inputs: score outputs and baselines (PSNR/SSIM)")
    parser.add_argument("--figure", help="with --reference: write a PNG of example rows here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = enhance_folder(
            args.ckpt, args.input, args.output, args.tile, args.overlap, args.device, args.overwrite,
            not args.no_progress,
        )
    except FileNotFoundError as err:  # a missing or empty --input, a missing --ckpt: the message says what to give
        raise SystemExit(f"syn2real enhance: {err}") from err
    print(f"enhanced {summary.enhanced}, skipped (already done) {summary.skipped}, failed {len(summary.failed)} -> {args.output}")
    if summary.failed:
        print("unreadable images (not enhanced): " + ", ".join(summary.failed[:20]), file=sys.stderr)
        sys.exit(1)
    if args.reference:
        _report(args.input, args.reference, args.output, args.figure, progress=not args.no_progress)


def _report(low: str, reference: str, output: str, figure: str | None, progress: bool = True) -> None:
    """Score outputs and baselines against the references (a progress bar over the images unless ``progress`` is
    False); table, ``enhance_eval.json``, optional figure."""
    from rich.console import Console
    from rich.table import Table

    from syn2real.metrics.enhancement import evaluate_folders, example_figure

    scores = evaluate_folders(low, reference, {"enlightengan": output}, progress=progress)
    per_image = {name: s.pop("per_image") for name, s in scores.items()}
    write_json_atomic(scores, Path(output) / "enhance_eval.json")  # mean ± std over images, per method
    write_json_atomic(per_image, Path(output) / "enhance_eval_per_image.json")
    table = Table(title=f"enhancement vs references ({len(per_image['input'])} images)")
    for column in ("method", "PSNR dB", "SSIM"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, s in scores.items():
        table.add_row(name, f"{s['psnr_mean']:.2f} ± {s['psnr_std']:.2f}", f"{s['ssim_mean']:.4f} ± {s['ssim_std']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"scores written to {Path(output) / 'enhance_eval.json'}")
    if figure:
        console.print(f"examples written to {example_figure(low, reference, {'enlightengan': output}, figure)}")


if __name__ == "__main__":
    main()
