"""Enhancement throughput and peak memory for one large image: tiled vs whole-image inference.

The paper-sized EnlightenGAN generator (32 base channels, 5 levels, eval mode, random weights: speed does not
depend on them) enhances a 2048×1024 image (a Cityscapes frame) either in one pass or tile by tile
(:func:`syn2real.models.enlighten.enhance_tiled`, ``--tile`` with ``--overlap`` context pixels). Each mode runs in
its own subprocess, interleaved over ``--rounds`` rounds, so peak memory is that process's alone: on CPU the growth
of the peak resident set (``ru_maxrss``) over the process's resident set just before the first pass; on a GPU
``torch.cuda.max_memory_allocated``. Reports megapixels/s (median over rounds) and the tiled / whole ratios, and
the largest pixel difference between the two outputs (8-bit levels).

    python benchmarks/enhance_tiled.py --height 1024 --width 2048 --tile 512 --overlap 32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def _child(args: argparse.Namespace) -> None:
    from syn2real.models.enlighten import enhance_tiled
    from syn2real.models.enlighten import EnlightenGeneratorConfig

    torch.manual_seed(0)
    device = torch.device(args.device)
    generator = EnlightenGeneratorConfig(ngf=args.ngf).build().eval().to(device)
    x = (torch.rand(1, 3, args.height, args.width, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    tile = args.tile if args.mode == "tiled" else max(args.height, args.width)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with torch.no_grad():
        out = enhance_tiled(generator, x, tile=tile, overlap=args.overlap)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.save_output:
        torch.save(out.cpu(), args.save_output)
    print(json.dumps({"seconds": seconds, "peak_bytes": peak - base}))


def _run(args: argparse.Namespace, mode: str, save: str | None = None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--height", str(args.height), "--width", str(args.width),
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--ngf", str(args.ngf), "--device", args.device]
    if save:
        cmd += ["--save_output", save]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["tiled", "whole"], default="tiled", help=argparse.SUPPRESS)
    parser.add_argument("--save_output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    import tempfile
    from pathlib import Path

    results: dict[str, list[dict[str, float]]] = {"whole": [], "tiled": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in ("whole", "tiled"):
                save = str(Path(tmp) / f"{mode}.pt") if r == 0 else None
                results[mode].append(_run(args, mode, save))
        diff = (torch.load(Path(tmp) / "tiled.pt") - torch.load(Path(tmp) / "whole.pt")).abs().max().item() * 127.5
    mp = args.height * args.width / 1e6
    summary = {}
    for mode, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_bytes"] for r in runs)
        summary[mode] = {"seconds": round(seconds, 3), "megapixels_per_s": round(mp / seconds, 4), "peak_mib": round(peak / 2**20, 1)}
    summary["ratio_tiled_over_whole"] = {
        "speed": round(summary["tiled"]["megapixels_per_s"] / summary["whole"]["megapixels_per_s"], 3),
        "peak_memory": round(summary["tiled"]["peak_mib"] / max(summary["whole"]["peak_mib"], 1e-9), 3),
    }
    summary["max_difference_8bit_levels"] = round(diff, 4)
    summary["setup"] = {
        "image": f"{args.width}x{args.height}", "tile": args.tile, "overlap": args.overlap, "ngf": args.ngf,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
