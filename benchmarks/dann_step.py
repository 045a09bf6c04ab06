"""Time per training step of ``DANN`` (through Lightning) vs the bare passes it needs, side by side.

- ``bare``: what any method training on paired batches must do: one forward of the task network on the
  source + target batch, cross-entropy on the source half, one backward, one optimizer step (plain torch).
- ``bare_dann``: the same plus DANN's own work written by hand (GRL, discriminator forward/backward).
- ``lightning``: ``DANN.training_step`` through the Lightning loop (hooks, logging, the λ schedule).

All use the same weights and in-memory batch; rounds are interleaved so machine drift hits each alike; the
median per-step time and the ratios to ``bare`` are printed.

    python benchmarks/dann_step.py --backbone digits_cnn --size 28 --batch 64 --steps 40 --rounds 3
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

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import lightning_steps  # noqa: E402

from syn2real.losses.adversarial import domain_adversarial_loss, grad_reverse  # noqa: E402
from syn2real.methods import DANN, OptimConfig  # noqa: E402
from syn2real.tasks import Classification
from syn2real.models.discriminators import DiscriminatorConfig  # noqa: E402
from syn2real.models.heads import NetworkConfig  # noqa: E402


def bare_steps(method: DANN, batch: dict, steps: int, device: torch.device, with_dann: bool) -> list[float]:
    model, disc = method.model.to(device), method.discriminator.to(device)
    x_s, y_s = (t.to(device) for t in batch["source"])
    x_t = batch["target"][0].to(device)
    params = list(model.parameters()) + (list(disc.parameters()) if with_dann else [])
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3)
    model.train()
    disc.train()
    n_s = x_s.shape[0]
    stamps = [time.perf_counter()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logits, feats = model(torch.cat([x_s, x_t]), return_features=True)
        loss = F.cross_entropy(logits[:n_s], y_s)
        if with_dann:
            d = disc(grad_reverse(feats, 0.5))
            loss = loss + domain_adversarial_loss(d[:n_s], d[n_s:])
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="digits_cnn")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=64, help="per domain")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--bottleneck", type=int, default=None)
    parser.add_argument("--discriminator", default="dann", help="preset (dann = 1024-1024-1)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    torch.manual_seed(0)
    in_chans = 1 if args.backbone == "digits_cnn" else 3
    x_s = torch.randn(args.batch, in_chans, args.size, args.size)
    x_t = torch.randn(args.batch, in_chans, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    batch = {"source": (x_s, y), "target": (x_t, torch.full_like(y, -1), torch.arange(args.batch))}
    net = NetworkConfig(backbone=args.backbone, num_classes=args.classes, in_chans=in_chans,
                        bottleneck_dim=args.bottleneck)
    optim = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3)
    template = DANN(task=Classification(network=net), optim=optim, discriminator=DiscriminatorConfig(preset=args.discriminator))
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

    times: dict[str, list[float]] = {"bare": [], "bare_dann": [], "lightning": []}
    for _ in range(args.rounds):
        # the first step of each is dropped (allocator, kernel selection)
        times["bare"] += bare_steps(copy.deepcopy(template), batch, args.steps + 1, device, False)[1:]
        times["bare_dann"] += bare_steps(copy.deepcopy(template), batch, args.steps + 1, device, True)[1:]
        times["lightning"] += lightning_steps(copy.deepcopy(template), batch, args.steps, args.accelerator)
    med = {k: statistics.median(v) for k, v in times.items()}
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    result = {
        "backbone": args.backbone, "size": args.size, "batch_per_domain": args.batch,
        "discriminator": args.discriminator, "steps_per_round": args.steps, "rounds": args.rounds,
        "device": device_name, "threads": torch.get_num_threads(),
        **{f"{k}_s_per_step": round(v, 5) for k, v in med.items()},
        "ratio_dann_lightning_over_bare": round(med["lightning"] / med["bare"], 4),
        "ratio_dann_bare_over_bare": round(med["bare_dann"] / med["bare"], 4),
        "ratio_lightning_over_bare_dann": round(med["lightning"] / med["bare_dann"], 4),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
