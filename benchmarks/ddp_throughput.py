"""Training throughput under DDP on 2 CPU processes (gloo) vs 1 process, through the real CLI.

Each setting is a fresh ``syn2real fit`` of the same config (default: DANN on the embedded digits,
``configs/digits/dann.yaml`` after ``configs/digits/base.yaml``; data from the cache, no logger, no evaluation during
the timed steps):

- ``1 proc × 2 threads``: one process using both cores (what a user runs without DDP);
- ``1 proc × 1 thread``: the per-process share each DDP rank gets;
- ``2 procs × 1 thread, batch B``: DDP with the config's batch per rank (global batch 2B: weak scaling, how DDP is
  normally used: more GPUs, more images per step);
- ``2 procs × 1 thread, batch B/2``: DDP with the global batch of the 1-process run (strong scaling: the same
  optimisation, split);
- ``2 procs × 1 thread, batch B, NaN guard off``: what the guard's per-step all-reduce of its verdict costs.

Steps are timed on rank 0 between consecutive ``on_train_batch_end`` calls (:class:`StepClock`: the whole loop,
loader, gradient all-reduce and waiting for the other rank included); the first ``--warmup`` steps of each run are
dropped. Settings are interleaved over ``--rounds`` rounds so machine drift hits each alike. Reported: median s/step,
images/s (source + target images of all ranks per step), and the ratios to ``1 proc × 2 threads``. On a 2-core
machine DDP cannot add compute; the ratio measures what the process split and the all-reduce cost or save
relative to intra-op threading. On GPUs each rank brings its own device and the same script with
``--accelerator gpu`` measures the scaling that matters.

    python benchmarks/ddp_throughput.py --steps 40 --warmup 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from syn2real.command import base_config

REPO = Path(__file__).resolve().parents[1]
CLOCK_FILE = "step_clock_rank0.json"


class StepClock(L.Callback):
    """Rank 0 writes the wall-clock stamp of every ``on_train_batch_end`` to ``<default_root_dir>/step_clock_rank0.json``."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0:
            (Path(trainer.default_root_dir) / CLOCK_FILE).write_text(json.dumps(self.stamps))


def settings(batch: int) -> list[dict]:
    return [
        {"name": "1 proc × 2 threads", "devices": 1, "threads": 2, "batch": batch},
        {"name": "1 proc × 1 thread", "devices": 1, "threads": 1, "batch": batch},
        {"name": f"2 procs × 1 thread, batch {batch}/rank", "devices": 2, "threads": 1, "batch": batch},
        {"name": f"2 procs × 1 thread, batch {batch // 2}/rank", "devices": 2, "threads": 1, "batch": batch // 2},
        {"name": f"2 procs × 1 thread, batch {batch}/rank, NaN guard off", "devices": 2, "threads": 1, "batch": batch,
         "args": ["--nan_guard.enabled", "false"]},
    ]


def config_files(config: Path) -> list[Path]:
    """``config`` after the base.yaml of its folder when it is a method's file (README "Composed configs")."""
    base = base_config(config)
    return [config] if base is None else [base, config]


def config_batch(file: Path) -> int | None:
    """``data.init_args.batch_size`` of one config file, if it sets one."""
    batch = ((yaml.safe_load(file.read_text()) or {}).get("data") or {}).get("init_args", {}).get("batch_size")
    return None if batch is None else int(batch)


def run_setting(s: dict, args: argparse.Namespace, root: Path) -> list[float]:
    """One fresh fit; the timed step durations of rank 0."""
    configs = [a for c in config_files(args.config) for a in ("--config", str(c))]
    cmd = [sys.executable, "-m", "syn2real.cli", "fit", *configs,
           "--trainer.accelerator", args.accelerator, "--trainer.devices", str(s["devices"]),
           "--trainer.max_steps", str(args.steps + args.warmup), "--trainer.max_epochs", "-1",
           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
           "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
           "--checkpoint.monitor", "null", "--media.every_n_steps", "0",
           "--data.init_args.batch_size", str(s["batch"]),
           "--trainer.callbacks+", "ddp_throughput.StepClock", "--trainer.default_root_dir", str(root)]
    if s["devices"] > 1:
        cmd += ["--trainer.strategy", "ddp"]
    cmd += s.get("args", []) + args.extra
    env = {**os.environ, "OMP_NUM_THREADS": str(s["threads"]),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{s['name']} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    stamps = json.loads((root / CLOCK_FILE).read_text())
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    return durations[args.warmup - 1:] if args.warmup > 0 else durations


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "digits" / "dann.yaml")
    parser.add_argument("--batch", type=int, default=None, help="per-rank batch of the 1-process runs (default: "
                                                                  "the config's data.init_args.batch_size)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("extra", nargs="*", help="more CLI overrides after --, e.g. -- --data.init_args.n_synthetic 2000")
    args = parser.parse_args(argv)
    batch = args.batch or [b for b in map(config_batch, config_files(args.config)) if b is not None][-1]
    todo = settings(batch)
    times: dict[str, list[float]] = {s["name"]: [] for s in todo}
    with tempfile.TemporaryDirectory(prefix="ddp_throughput_") as tmp:
        for r in range(args.rounds):
            for i, s in enumerate(todo):
                times[s["name"]] += run_setting(s, args, Path(tmp) / f"r{r}_s{i}")
                print(f"round {r + 1}/{args.rounds}: {s['name']}: median so far "
                      f"{statistics.median(times[s['name']]):.4f} s/step", flush=True)
    ref = todo[0]["name"]
    result: dict = {"config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
                    "steps_per_run": args.steps, "warmup": args.warmup, "rounds": args.rounds,
                    "torch": torch.__version__, "cpu_count": os.cpu_count(), "settings": {}}
    for s in todo:
        med = statistics.median(times[s["name"]])
        images = 2 * s["batch"] * s["devices"]  # source + target images per step, all ranks
        result["settings"][s["name"]] = {"devices": s["devices"], "threads_per_process": s["threads"],
                                         "batch_per_rank": s["batch"], "s_per_step": round(med, 5),
                                         "images_per_s": round(images / med, 1)}
    ref_ips = result["settings"][ref]["images_per_s"]
    for v in result["settings"].values():
        v["throughput_vs_1proc_2threads"] = round(v["images_per_s"] / ref_ips, 3)
    print(f"{'setting':<52} {'s/step':>8} {'images/s':>9} {'× ref':>6}")
    for name, v in result["settings"].items():
        print(f"{name:<52} {v['s_per_step']:>8.4f} {v['images_per_s']:>9.1f} {v['throughput_vs_1proc_2threads']:>6.3f}")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
