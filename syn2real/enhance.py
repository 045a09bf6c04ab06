"""``syn2real enhance``: low-light images through a trained EnlightenGAN generator, at full resolution, tile by tile.

    syn2real enhance --ckpt runs/enlightengan/checkpoints/last.ckpt --input night_photos --output enhanced

Every image under ``--input`` is enhanced and written to the same relative path under ``--output`` (atomically;
outputs that exist are skipped, so an interrupted run resumes). Large images are processed in tiles of ``--tile``
pixels: each tile is run with ``--overlap`` pixels of real image context on every side and only its centre is kept,
so memory is bounded by the tile size while seams match the whole-image result (tiles start on the generator's
pooling grid; :func:`syn2real.models.enlighten.enhance_tiled`). Unreadable images are reported by name and skipped;
the command then exits with status 1, as it does at once for an ``--input`` without image files.

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

from syn2real.commands.loading import resolve_device
from syn2real.core.luminance import LUMA
from syn2real.data.datasets import IMAGE_EXTENSIONS, CorruptImageError, load_image, natural_key, pair_by_name
from syn2real.io import read_checkpoint, write_json_atomic
from syn2real.models.enlighten import enhance_tiled
from syn2real.translate import save_image

__all__ = [
    "EnhanceSummary", "LowLightEnhance", "enhance_array", "enhance_folder", "evaluate_folders", "example_figure",
    "load_enhancer", "main",
]

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


def _pairs(low_dir: Path, reference_dir: Path) -> list[tuple[str, Path, Path]]:
    pairs, missing = pair_by_name(low_dir, reference_dir)
    if missing:
        name = missing[0]
        raise FileNotFoundError(
            f"{low_dir / name} has no reference named {Path(name).with_suffix('').as_posix()}.* under {reference_dir}"
        )
    if not pairs:
        raise FileNotFoundError(f"{low_dir} contains no images to evaluate")
    return pairs


def evaluate_folders(
    low_dir: str | Path, reference_dir: str | Path, enhanced: dict[str, str | Path], progress: bool = False
) -> dict[str, Any]:
    """Scores of the baselines and of each folder in ``enhanced`` (name -> folder with the same relative names)
    against the references: ``{method: {psnr_mean, psnr_std, ssim_mean, ssim_std, per_image: {...}}}``; with
    ``progress``, a progress bar over the images."""
    from tqdm.auto import tqdm

    from syn2real.metrics.enhancement import BASELINES, image_scores

    low_dir, reference_dir = Path(low_dir), Path(reference_dir)
    scores: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in [*BASELINES, *enhanced]}
    pairs = _pairs(low_dir, reference_dir)
    for key, low_path, ref_path in tqdm(pairs, desc="scoring", unit="img", disable=not progress):
        low, ref = load_image(low_path, "RGB"), load_image(ref_path, "RGB")
        for name, fn in BASELINES.items():
            scores[name][key] = image_scores(fn(low), ref)
        for name, folder in enhanced.items():
            candidates = [p for p in (Path(folder) / key).parent.glob(Path(key).name + ".*") if p.is_file()]
            if not candidates:
                raise FileNotFoundError(f"{folder} has no enhanced image named {key}.*")
            scores[name][key] = image_scores(load_image(candidates[0], "RGB"), ref)
    out: dict[str, Any] = {}
    for name, per_image in scores.items():
        psnr = np.array([v[0] for v in per_image.values()])
        ssim = np.array([v[1] for v in per_image.values()])
        out[name] = {
            "psnr_mean": float(psnr.mean()), "psnr_std": float(psnr.std()),
            "ssim_mean": float(ssim.mean()), "ssim_std": float(ssim.std()),
            "per_image": {k: {"psnr": v[0], "ssim": v[1]} for k, v in per_image.items()},
        }
    return out


def example_figure(
    low_dir: str | Path, reference_dir: str | Path, enhanced: dict[str, str | Path], path: str | Path,
    max_rows: int = 4, size: int = 160,
) -> Path:
    """A PNG grid, one row per test image: dark input | gamma | hist. eq. | each enhanced folder | reference."""
    import cv2
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from syn2real.metrics.enhancement import BASELINES, image_scores

    pairs = _pairs(Path(low_dir), Path(reference_dir))[:max_rows]
    columns = ["input", "gamma", "histeq", *enhanced, "reference"]
    fig, axes = plt.subplots(len(pairs), len(columns), figsize=(1.9 * len(columns), 1.9 * len(pairs)), squeeze=False)
    for r, (key, low_path, ref_path) in enumerate(pairs):
        low, ref = load_image(low_path, "RGB"), load_image(ref_path, "RGB")
        images = [BASELINES[c](low) for c in ("input", "gamma", "histeq")]
        for folder in enhanced.values():
            images.append(load_image(next((Path(folder) / key).parent.glob(Path(key).name + ".*")), "RGB"))
        images.append(ref)
        for c, (name, image) in enumerate(zip(columns, images)):
            ax = axes[r][c]
            scale = size / max(image.shape[:2])
            thumb = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
            ax.imshow(thumb)
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "reference":
                psnr, _ = image_scores(image, ref)
                ax.set_xlabel(f"{psnr:.1f} dB", fontsize=7)
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _report(low: str, reference: str, output: str, figure: str | None, progress: bool = True) -> None:
    """Score outputs and baselines against the references (a progress bar over the images unless ``progress`` is
    False); table, ``enhance_eval.json``, optional figure."""
    from rich.console import Console
    from rich.table import Table

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
