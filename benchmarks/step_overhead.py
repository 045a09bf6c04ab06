"""Time per training step of ``SourceOnly`` through Lightning vs a bare torch loop, side by side.

Both run the same model (same initial weights), the same batch (already in memory, so no loader cost),
the same SGD optimizer, forward + cross-entropy + backward + step. The two are interleaved in rounds
(bare, Lightning, bare, Lightning, ...) so machine drift hits both alike; the median per-step time of
each is reported with the ratio Lightning / bare.

    python benchmarks/step_overhead.py --backbone resnet18 --size 224 --batch 16 --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Iterator

import lightning as L
import torch
import torch.nn.functional as F

from syn2real.methods import OptimConfig, SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig


class RepeatBatch(torch.utils.data.IterableDataset):
    """Yields the same paired batch ``n`` times (``batch_size=None`` loader: no collation cost)."""

    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self) -> Iterator[dict]:
        for _ in range(self.n):
            yield self.batch


class StepTimer(L.Callback):
    """Wall time between consecutive ``on_train_batch_end`` calls: the whole loop, hooks included."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, *args, **kwargs) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())


def bare_steps(model: torch.nn.Module, batch: dict, steps: int, lr: float, device: torch.device) -> list[float]:
    x, y = batch["source"]
    x, y = x.to(device), y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    stamps = [time.perf_counter()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def lightning_steps(method: SourceOnly, batch: dict, steps: int, accelerator: str) -> list[float]:
    timer = StepTimer()
    loader = torch.utils.data.DataLoader(RepeatBatch(batch, steps + 1), batch_size=None)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
        log_every_n_steps=50,
    )
    trainer.fit(method, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    torch.manual_seed(0)
    in_chans = 1 if args.backbone == "digits_cnn" else 3
    x = torch.randn(args.batch, in_chans, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    batch = {"source": (x, y), "target": (x.clone(), torch.full_like(y, -1))}
    net = NetworkConfig(backbone=args.backbone, num_classes=args.classes, in_chans=in_chans)
    optim = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)
    template = SourceOnly(task=Classification(network=net), optim=optim)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

    bare: list[float] = []
    light: list[float] = []
    for _ in range(args.rounds):
        # one warm-up step is dropped from each (allocator, oneDNN/cuDNN kernel selection)
        bare += bare_steps(copy.deepcopy(template.model).to(device), batch, args.steps + 1, optim.lr, device)[1:]
        light += lightning_steps(copy.deepcopy(template), batch, args.steps, args.accelerator)
    b, l_ = statistics.median(bare), statistics.median(light)
    result = {
        "backbone": args.backbone, "size": args.size, "batch": args.batch, "steps_per_round": args.steps,
        "rounds": args.rounds, "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "bare_s_per_step": round(b, 5), "lightning_s_per_step": round(l_, 5),
        "ratio_lightning_over_bare": round(l_ / b, 4),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
