"""``syn2real translate``: write a whole dataset through a CyCADA generator, once, to disk.

    syn2real translate --ckpt runs/gta5_cycada/checkpoints/last.ckpt --input data/gta5 --output data/gta5_as_cs \\
        --copy "labels/*"

Every image under ``--input`` is translated (source→target by default) and written to the same relative path
under ``--output``, so class folders, list files and label folders keep working: files that are not images, and
files matching a ``--copy`` pattern (label PNGs!), are copied unchanged. Images stream through the generator in
batches of equal-sized images at their full resolution; every output is written atomically; files already present
in the output are skipped, so an interrupted run resumes where it stopped. Unreadable images are reported by name
and skipped; the command then exits with status 1 after finishing the others; an ``--input`` without image files
(outside the ``--copy`` patterns) is an error at once.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from syn2real.commands.loading import resolve_device
from syn2real.data.datasets import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    load_image,
    natural_key,
)
from syn2real.io import atomic_write, write_json_atomic

__all__ = ["TranslateSummary", "main", "translate_folder"]

log = logging.getLogger(__name__)


@dataclass
class TranslateSummary:
    """What a translate run did (paths relative to the input folder)."""

    translated: int = 0
    copied: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"translated": self.translated, "copied": self.copied, "skipped": self.skipped, "failed": self.failed}


def _is_copied(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def _is_image(rel: Path, copy: Sequence[str]) -> bool:
    """Whether the file at relative path ``rel`` is translated: an image extension, no ``--copy`` match."""
    return rel.suffix.lower() in IMAGE_EXTENSIONS and not _is_copied(rel.as_posix(), copy)


def save_image(array: np.ndarray, path: Path) -> None:
    """An H×W×C uint8 array written atomically in the format of ``path``'s extension (JPEG at quality 95)."""
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    options = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write(path, lambda f: image.save(f, format=fmt, **options))


def _batches(
    items: Sequence[tuple[Path, Path]], mode: str, batch_size: int, summary: TranslateSummary, root: Path
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Consecutive images of equal size, decoded, as (outputs, N×H×W×C uint8); unreadable files recorded."""
    outs: list[Path] = []
    arrays: list[np.ndarray] = []
    for src, dst in items:
        try:
            array = load_image(src, mode)
        except (CorruptImageError, FileNotFoundError) as err:
            log.error("%s", err)
            summary.failed.append(str(src.relative_to(root)))
            continue
        if arrays and (array.shape != arrays[0].shape or len(arrays) == batch_size):
            yield outs, np.stack(arrays)
            outs, arrays = [], []
        outs.append(dst)
        arrays.append(array)
    if arrays:
        yield outs, np.stack(arrays)


@torch.no_grad()
def translate_folder(
    ckpt: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    direction: str = "st",
    batch_size: int = 16,
    device: str = "auto",
    copy: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
) -> TranslateSummary:
    """Translate every image under ``input_dir`` into ``output_dir`` with the ``direction`` generator of the CyCADA
    checkpoint ``ckpt``; see the module docstring. Returns counts of translated, copied, skipped and failed files."""
    from syn2real.models.translator import load_generator

    root, out_root = Path(input_dir), Path(output_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--input {root} is not a directory; give the folder of the images to translate")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if out_root.resolve() == root.resolve() or root.resolve() in out_root.resolve().parents:
        raise ValueError(f"--output {out_root} must not be --input {root} or inside it")
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p.relative_to(root))))
    if not any(_is_image(p.relative_to(root), copy) for p in files):
        copied = f" outside the --copy patterns {list(copy)}" if copy else ""
        raise FileNotFoundError(
            f"--input {root} contains no image files{copied} ({len(files)} other files; searched recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}); give the folder of the images to translate"
        )
    generator, pixels = load_generator(ckpt, direction)  # type: ignore[arg-type]
    dev = resolve_device(device)
    generator, pixels = generator.to(dev), pixels.to(dev)
    mode = "L" if generator.in_channels == 1 else "RGB"

    summary = TranslateSummary()
    images: list[tuple[Path, Path]] = []
    for src in files:
        rel = src.relative_to(root)
        dst = out_root / rel
        if dst.exists() and not overwrite:
            summary.skipped += 1
        elif _is_image(rel, copy):
            images.append((src, dst))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dst, lambda f, s=src: f.write(s.read_bytes()))
            shutil.copymode(src, dst)
            summary.copied += 1

    bar = None
    if progress and images:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="translate", unit="img")
    for outs, batch in _batches(images, mode, batch_size, summary, root):
        x = torch.from_numpy(batch).to(dev).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        y = generator(x)
        arrays = y.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for dst, array in zip(outs, arrays):
            save_image(array, dst)
            summary.translated += 1
        if bar is not None:
            bar.update(len(outs))
    if bar is not None:
        bar.close()
    write_json_atomic(
        {"checkpoint": str(ckpt), "direction": direction, "input": str(root), **summary.as_dict()},
        out_root / "translate_summary.json",
    )
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="syn2real translate", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of a CyCADA pixel-level run")
    parser.add_argument("--input", required=True, help="folder of the images to translate (any layout)")
    parser.add_argument("--output", required=True, help="folder to write; the input's layout is kept")
    parser.add_argument("--direction", choices=["st", "ts"], default="st", help="st: source→target (default)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--copy", action="append", default=[], metavar="GLOB",
        help="copy matching files (relative paths) instead of translating them, e.g. 'labels/*'; repeatable",
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = translate_folder(
            args.ckpt, args.input, args.output, args.direction, args.batch_size, args.device, args.copy,
            args.overwrite, not args.no_progress,
        )
    except FileNotFoundError as err:  # a missing or empty --input, a missing --ckpt: the message says what to give
        raise SystemExit(f"syn2real translate: {err}") from err
    print(
        f"translated {summary.translated}, copied {summary.copied}, skipped (already done) {summary.skipped}, "
        f"failed {len(summary.failed)} -> {args.output}"
    )
    if summary.failed:
        print("unreadable images (not translated): " + ", ".join(summary.failed[:20]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
