"""Cost of adversarial augmentation, measured side by side in one run.

1. PGD-k training step vs a clean step: ``SourceOnly`` through Lightning with ``augment: PGD(steps=k)`` vs without.
   A PGD-k step needs k extra forward + backward passes (w.r.t. the input), so the goal is ≤ (k + 1) × 1.1.
2. Worst-of-k spatial candidates scored in one batched forward (``WorstOfK``) vs a loop of k forwards.

Rounds are interleaved so machine drift hits each side alike; medians are printed as JSON.

    python benchmarks/adversarial_step.py --backbone digits_cnn --size 28 --batch 64 --pgd_steps 7 --steps 10 --rounds 3
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

from syn2real.adversarial import PGD, WorstOfK  # noqa: E402
from syn2real.adversarial.spatial import transform_batch  # noqa: E402
from syn2real.methods import OptimConfig, SourceOnly  # noqa: E402
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig  # noqa: E402


def worst_of_k_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: WorstOfK) -> torch.Tensor:
    """The same selection as ``WorstOfK`` with one forward per candidate (the unbatched baseline)."""
    best, best_loss = x, torch.full((x.shape[0],), -float("inf"))
    model.eval()
    with torch.no_grad():
        for _ in range(attack.k):
            angles, shifts = attack.sample(x.shape[0], x.device)
            cand = transform_batch(x, angles, shifts, attack.mean, attack.std)
            loss = F.cross_entropy(model(cand), y, reduction="none")
            better = loss > best_loss
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_loss = torch.where(better, loss, best_loss)
    model.train()
    return best


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (lazy imports, allocator, kernel selection)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="digits_cnn")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pgd_steps", type=int, default=7)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    torch.manual_seed(0)
    in_chans = 1 if args.backbone == "digits_cnn" else 3
    x = torch.rand(args.batch, in_chans, args.size, args.size) * 2 - 1
    y = torch.randint(0, 10, (args.batch,))
    batch = {"source": (x, y), "target": (x.clone(), torch.full_like(y, -1), torch.arange(args.batch))}
    net = NetworkConfig(backbone=args.backbone, num_classes=10, in_chans=in_chans)
    optim = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)
    clean = SourceOnly(task=Classification(network=net), optim=optim)
    attack = PGD(epsilon=0.3, step_size=0.01, steps=args.pgd_steps)
    spatial = WorstOfK(k=args.k)

    times: dict[str, list[float]] = {"clean": [], "pgd": [], "worst_of_k_batched": [], "worst_of_k_loop": []}
    for _ in range(args.rounds):
        times["clean"] += lightning_steps(copy.deepcopy(clean), batch, args.steps, args.accelerator)
        adv = copy.deepcopy(clean)
        adv.augment = attack
        times["pgd"] += lightning_steps(adv, batch, args.steps, args.accelerator)
        model = copy.deepcopy(clean.model)
        times["worst_of_k_batched"] += timed(lambda: spatial(model, x, y), args.steps)
        times["worst_of_k_loop"] += timed(lambda: worst_of_k_loop(model, x, y, spatial), args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else platform.processor() or "cpu"
    result = {
        "backbone": args.backbone, "size": args.size, "batch": args.batch, "pgd_steps": args.pgd_steps, "k": args.k,
        "steps_per_round": args.steps, "rounds": args.rounds, "device": device, "threads": torch.get_num_threads(),
        **{f"{k}_s": round(v, 5) for k, v in med.items()},
        "ratio_pgd_step_over_clean_step": round(med["pgd"] / med["clean"], 3),
        "goal_pgd_ratio_at_most": round((args.pgd_steps + 1) * 1.1, 2),
        "ratio_worst_of_k_loop_over_batched": round(med["worst_of_k_loop"] / med["worst_of_k_batched"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
