"""Time per training step of ``MeanTeacher`` (DACS, DACS + MIC; through Lightning) vs the bare passes it needs and
vs the bare source-only step of the same segmentation network, side by side.

- ``bare_source``: a plain-torch source-only step: forward, cross-entropy, backward, optimiser step.
- ``bare_dacs``: the passes DACS needs, by hand: the source step's forward/backward, the teacher's forward on the
  target (no gradient), ClassMix, a forward/backward on the mixed batch, one optimiser step and the EMA update.
- ``bare_mic``: ``bare_dacs`` plus a forward/backward on the masked target.
- ``dacs`` / ``mic``: ``MeanTeacher.training_step`` through the Lightning loop (strong view, per-image draws, logs).

All use the same weights and in-memory batch; rounds are interleaved so machine drift hits each alike; the median
per-step time and the ratios are printed, with the peak GPU memory of each on CUDA.

    python benchmarks/mean_teacher_step.py --size 48 --batch 32 --steps 10 --rounds 3   # the embedded benchmark
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import RepeatBatch, StepTimer  # noqa: E402

from syn2real.losses.mean_teacher import block_mask, class_mix_masks, ema_update, mix  # noqa: E402
from syn2real.methods import MeanTeacher  # noqa: E402
from syn2real.methods.mean_teacher import MaskConfig  # noqa: E402
from syn2real.models.segmentation import SegNetworkConfig  # noqa: E402
from syn2real.tasks import Segmentation  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_steps(method: MeanTeacher, batch: dict, steps: int, device: torch.device, kind: str) -> list[float]:
    task, model = method.task, method.model.to(device).train()
    teacher = method.teacher.to(device).eval()
    x_s, y_s = (t.to(device) for t in batch["source"])
    x_t = batch["target"][0].to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    stamps = [time.perf_counter()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(task.levels(model, x_s)[0], y_s, ignore_index=255).backward()
        if kind != "source":
            with torch.no_grad():
                conf, labels = task.levels(teacher, x_t)[0].softmax(1).max(1)
            weight = (conf >= 0.968).float().mean().expand_as(conf)
            masks = class_mix_masks(y_s)
            x_m, y_m = mix(masks, x_s, x_t), mix(masks, y_s, labels)
            w_m = mix(masks, torch.ones_like(weight), weight)
            ce = F.cross_entropy(task.levels(model, x_m)[0], y_m, ignore_index=255, reduction="none")
            (ce * w_m).mean().backward()
            if kind == "mic":
                visible = block_mask(x_t.shape[0], x_t.shape[-2], x_t.shape[-1], 6, 0.7, device=device)
                ce = F.cross_entropy(task.levels(model, x_t * visible)[0], labels, reduction="none")
                (ce * weight).mean().backward()
        opt.step()
        if kind != "source":
            ema_update(teacher, model, 0.99)
        _sync(device)
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def lightning_steps(method: MeanTeacher, batch: dict, steps: int, accelerator: str) -> list[float]:
    timer = StepTimer()
    loader = torch.utils.data.DataLoader(RepeatBatch(batch, steps + 1), batch_size=None)
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_steps=steps + 1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer], log_every_n_steps=50)
    trainer.fit(method, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    torch.manual_seed(0)
    network = SegNetworkConfig(backbone="resnet18", num_classes=args.classes, in_chans=1, aspp_rates=[1, 2, 4, 6],
                               freeze_bn=False, backbone_kwargs={"out_indices": [0, 1]})  # the embedded benchmark's
    common = dict(task=Segmentation(network), optim=None, pixel_mean=[0.5], pixel_std=[0.5], ema_momentum=0.99)
    base = MeanTeacher(**common)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 1, args.size, args.size)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=g)
    batch = {"source": (torch.randn(*shape, generator=g), labels),
             "target": (torch.randn(*shape, generator=g), torch.full_like(labels, 255))}
    times: dict[str, list[float]] = {k: [] for k in ("bare_source", "bare_dacs", "bare_mic", "dacs", "mic")}
    peaks: dict[str, int] = {}
    for _ in range(args.rounds):
        for name in times:
            method = copy.deepcopy(base)
            if name == "mic":
                method.mask_cfg = MaskConfig(block=6, ratio=0.7)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            if name.startswith("bare_"):
                times[name] += bare_steps(method, batch, args.steps + 1, device, name[len("bare_"):])[1:]
            else:
                times[name] += lightning_steps(method, batch, args.steps, accelerator)[1:]  # first: warm-up
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, {device.type}",
        "batch": f"{args.batch} + {args.batch}, {args.size} px, {args.classes} classes",
        "median_step_s": {k: round(v, 4) for k, v in med.items()},
        "dacs_vs_bare_source": round(med["dacs"] / med["bare_source"], 2),
        "mic_vs_bare_source": round(med["mic"] / med["bare_source"], 2),
        "dacs_vs_bare_dacs": round(med["dacs"] / med["bare_dacs"], 2),
        "mic_vs_bare_mic": round(med["mic"] / med["bare_mic"], 2),
    }
    if peaks:
        result["peak_gpu_mib"] = {k: round(v / 2**20) for k, v in peaks.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
