"""ResNet-101 training step, classification or DeepLabV2 segmentation: fp32 vs channels_last vs bf16 (vs compile).

``--task segmentation`` (default): one training step as the segmentation methods take it on 512×512 crops: forward
(:meth:`SegmentationNet.forward`, logits upsampled to the input), cross-entropy with ``ignore_index=255`` on random
labels (10 % of the pixels 255), backward, SGD (momentum 0.9, weight decay 5e-4; backbone lr 2.5e-4, ASPP head lr
2.5e-3, DeepLab's 10×). The network is ``build_segmenter(SegNetworkConfig(backbone=..., num_classes=19))``: output
stride 8, frozen backbone BatchNorm.

``--task classification``: the VisDA-2017 fine-tuning step on 224×224 images: ``build_classifier(NetworkConfig(
backbone=..., num_classes=12, bottleneck_dim=256))`` (BatchNorm in training mode), cross-entropy on random labels,
backward, the same SGD with the head at 10× the backbone lr.

Random initial weights either way (speed does not depend on them). Variants are ``+``-joined switches on top of
``fp32``: ``channels_last`` (model and input in ``torch.channels_last``), ``bf16`` (``torch.autocast(device_type,
dtype=torch.bfloat16)`` around forward and loss; fp32 weights and SGD), ``compile`` (``torch.compile(model)``; off by
default, ``--compile`` adds ``compile`` and ``bf16+channels_last+compile``: compiling R101 on a CPU takes minutes).

Variants are interleaved in ``--rounds`` rounds (fp32, channels_last, ..., fp32, ...); each round runs ``--warmup``
untimed steps (allocator, oneDNN/cuDNN kernel selection, compilation) and ``--steps`` timed steps. Reported: median
s/step and images/s over all timed steps, the fastest step (on a shared machine contention only adds time, so it is
the least contended estimate), the forward-only time of the same batch (``no_grad``, eval mode: the
inference reference), and the training memory of the variant: the peak during its steps minus the memory in use just
before them (weights and input already there), i.e. gradients, momentum buffers, activations and workspaces.

* CUDA: all variants in this process, same initial weights; ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` per variant and round (a fresh optimizer each round, gradients freed after it, so no
  variant's state is counted in another's). ``fp32`` runs with torch's defaults, as a user's fp32 run does:
  cuDNN convolutions may use TF32 (``torch.backends.cudnn.allow_tf32``, on by default), matmuls do not
  (``torch.backends.cuda.matmul.allow_tf32``, off); ``--no_tf32`` turns both off for strict fp32. The setup records
  both flags.
* CPU: the resident set of a process only grows, so each (round, variant) runs in a fresh subprocess
  (``--child``), interleaved all the same; memory is the growth of that process's peak resident set
  (``ru_maxrss``) over its value just before the first step. It includes what the allocator keeps cached and, for
  ``compile``, the compiler's own memory.

Ratios vs the first variant (``fp32`` by default; speed: median images/s and fastest step; memory: training peak)
come from the same run.

    python benchmarks/precision_step.py --device cpu --threads 2 --size 512 --batch 1 --steps 2 --rounds 2 --warmup 1
    python benchmarks/precision_step.py --device cuda --batch 2 --steps 20 --rounds 3 --compile
    python benchmarks/precision_step.py --task classification --device cuda --batch 64 --steps 20 --rounds 3 --compile
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

DEFAULT_VARIANTS = ["fp32", "channels_last", "bf16", "bf16+channels_last"]
SWITCHES = {"channels_last", "bf16", "compile"}
IGNORE_INDEX = 255


def parse_variant(name: str) -> set[str]:
    """``fp32`` → no switch; otherwise ``+``-joined switches of :data:`SWITCHES` (``fp32`` may be one of them)."""
    parts = {p for p in name.split("+") if p and p != "fp32"}
    unknown = parts - SWITCHES
    if unknown:
        raise ValueError(f"unknown variant switch(es) {sorted(unknown)} in {name!r}; "
                         f"use fp32 or +-joined {sorted(SWITCHES)}")
    return parts


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


TASK_DEFAULTS = {  # size, batch, classes
    "segmentation": (512, 2, 19),
    "classification": (224, 64, 12),
}


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    if args.task == "classification":
        from syn2real.models.heads import NetworkConfig, build_classifier

        return build_classifier(NetworkConfig(backbone=args.backbone, num_classes=args.classes, in_chans=3,
                                              bottleneck_dim=256))
    from syn2real.models.segmentation import SegNetworkConfig, build_segmenter

    return build_segmenter(SegNetworkConfig(backbone=args.backbone, num_classes=args.classes))


def make_batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    if args.task == "classification":
        return x, torch.randint(0, args.classes, (args.batch,), generator=g)
    y = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.1] = IGNORE_INDEX
    return x, y


class Variant:
    """One variant's model, input and optimizer on ``device``."""

    def __init__(self, name: str, template: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 lr: float, head_lr: float) -> None:
        self.name, self.switches, self.device, self.lr, self.head_lr = name, parse_variant(name), device, lr, head_lr
        fmt = torch.channels_last if "channels_last" in self.switches else torch.contiguous_format
        self.net = copy.deepcopy(template).to(device).to(memory_format=fmt).train()
        self.model = torch.compile(self.net) if "compile" in self.switches else self.net
        self.x = x.to(device).contiguous(memory_format=fmt)
        self.y = y.to(device)
        self.opt: torch.optim.Optimizer | None = None

    def autocast(self):
        if "bf16" in self.switches:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def new_optimizer(self) -> None:
        groups = self.net.param_groups()
        self.opt = torch.optim.SGD(
            [{"params": groups["backbone"], "lr": self.lr}, {"params": groups["head"], "lr": self.head_lr}],
            lr=self.lr, momentum=0.9, weight_decay=5e-4,
        )

    def release(self) -> None:
        """Drop the optimizer state and the gradients (CUDA: so they are not counted in another variant's peak)."""
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
        self.opt = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_steps(self, n: int) -> list[float]:
        assert self.opt is not None
        times = []
        for _ in range(n):
            start = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            with self.autocast():
                loss = F.cross_entropy(self.model(self.x), self.y, ignore_index=IGNORE_INDEX)
            loss.backward()
            self.opt.step()
            self.sync()
            times.append(time.perf_counter() - start)
        return times

    def forward_steps(self, n: int) -> list[float]:
        self.model.eval()
        times = []
        with torch.no_grad():
            for _ in range(n):
                start = time.perf_counter()
                with self.autocast():
                    self.model(self.x)
                self.sync()
                times.append(time.perf_counter() - start)
        self.model.train()
        return times


def run_round(v: Variant, args: argparse.Namespace) -> dict:
    """Warm-up + timed training steps, then warm-up + timed forward passes; training memory of the steps."""
    cuda = v.device.type == "cuda"
    if cuda:
        v.sync()
        torch.cuda.reset_peak_memory_stats(v.device)
        base = torch.cuda.memory_allocated(v.device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    v.new_optimizer()
    v.train_steps(args.warmup)
    step_s = v.train_steps(args.steps)
    if cuda:
        peak = torch.cuda.max_memory_allocated(v.device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    v.release()
    v.forward_steps(1 if args.warmup > 0 else 0)
    forward_s = v.forward_steps(args.steps)
    return {"step_s": step_s, "forward_s": forward_s, "peak_bytes": peak - base}


def _child(args: argparse.Namespace) -> None:
    x, y = make_batch(args)
    v = Variant(args.variant, build_model(args), x, y, torch.device(args.device), args.lr, args.lr * args.head_lr_mult)
    print(json.dumps(run_round(v, args)))


def _child_cmd(args: argparse.Namespace, variant: str) -> list[str]:
    cmd = [sys.executable, __file__, "--child", "--task", args.task, "--variant", variant, "--device", args.device,
           "--backbone", args.backbone,
           "--classes", str(args.classes), "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--lr", str(args.lr), "--head_lr_mult", str(args.head_lr_mult)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def measure(args: argparse.Namespace, variants: list[str]) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {v: [] for v in variants}
    device = torch.device(args.device)
    if device.type == "cuda":
        template = build_model(args)
        x, y = make_batch(args)
        lr, head_lr = args.lr, args.lr * args.head_lr_mult
        models = {name: Variant(name, template, x, y, device, lr, head_lr) for name in variants}
        for _ in range(args.rounds):
            for name in variants:
                results[name].append(run_round(models[name], args))
        return results
    for _ in range(args.rounds):
        for name in variants:
            proc = subprocess.run(_child_cmd(args, name), capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"variant {name} failed:\n{proc.stderr[-4000:]}")
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def summarise(args: argparse.Namespace, variants: list[str], results: dict[str, list[dict]]) -> dict:
    summary: dict = {}
    for name in variants:
        runs = results[name]
        step = statistics.median(t for r in runs for t in r["step_s"])
        fwd = statistics.median(t for r in runs for t in r["forward_s"]) if runs[0]["forward_s"] else float("nan")
        peak = statistics.median(r["peak_bytes"] for r in runs)
        best = min(t for r in runs for t in r["step_s"])
        summary[name] = {"s_per_step": round(step, 4), "images_per_s": round(args.batch / step, 4),
                         "fastest_s_per_step": round(best, 4),
                         "forward_s": round(fwd, 4), "train_peak_mib": round(peak / 2**20, 1),
                         "all_step_s": [round(t, 3) for r in runs for t in r["step_s"]],
                         "all_forward_s": [round(t, 3) for r in runs for t in r["forward_s"]]}
    ref = variants[0]
    summary["ratios_vs_" + ref] = {
        name: {"speed": round(summary[name]["images_per_s"] / summary[ref]["images_per_s"], 3),
               "speed_fastest": round(summary[ref]["fastest_s_per_step"] / summary[name]["fastest_s_per_step"], 3),
               "memory": round(summary[name]["train_peak_mib"] / max(summary[ref]["train_peak_mib"], 1e-9), 3)}
        for name in variants
    }
    device = torch.device(args.device)
    summary["setup"] = {
        "task": args.task, "backbone": args.backbone, "classes": args.classes, "size": args.size, "batch": args.batch,
        "steps_per_round": args.steps, "warmup": args.warmup, "rounds": args.rounds, "device": device_name(device),
        "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
        "memory": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS growth, one subprocess per run",
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    return summary


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="segmentation")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--classes", type=int, default=None, help="default: 19 (segmentation), 12 (classification)")
    parser.add_argument("--size", type=int, default=None, help="default: 512 (segmentation), 224 (classification)")
    parser.add_argument("--batch", type=int, default=None, help="default: 2 (segmentation), 64 (classification)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (and forward passes) per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"fp32 or +-joined {sorted(SWITCHES)}; the first is the ratio reference "
                             f"(default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--compile", action="store_true", help="add compile and bf16+channels_last+compile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--lr", type=float, default=2.5e-4, help="backbone learning rate")
    parser.add_argument("--head_lr_mult", type=float, default=10.0)
    parser.add_argument("--no_tf32", action="store_true", help="CUDA: strict fp32 (no TF32 convolutions or matmuls)")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size, batch, classes = TASK_DEFAULTS[args.task]
    args.size, args.batch, args.classes = args.size or size, args.batch or batch, args.classes or classes
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.child:
        _child(args)
        return None
    variants = list(args.variants or DEFAULT_VARIANTS)
    if args.compile:
        variants += [v for v in ("compile", "bf16+channels_last+compile") if v not in variants]
    for name in variants:
        parse_variant(name)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")

    summary = summarise(args, variants, measure(args, variants))
    ref = variants[0]
    print(f"{'variant':<28} {'s/step':>8} {'img/s':>8} {'fastest':>8} {'fwd s':>8} {'train MiB':>10} {'speed×':>7} "
          f"{'mem×':>6}")
    for name in variants:
        s, r = summary[name], summary["ratios_vs_" + ref][name]
        print(f"{name:<28} {s['s_per_step']:>8.3f} {s['images_per_s']:>8.3f} {s['fastest_s_per_step']:>8.3f} "
              f"{s['forward_s']:>8.3f} "
              f"{s['train_peak_mib']:>10.1f} {r['speed']:>7.3f} {r['memory']:>6.3f}")
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
