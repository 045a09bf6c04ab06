"""Training-step time of ASG, ASG + learned layer-wise lrs and CSG vs plain fine-tuning, all through Lightning.

- ``finetune``: ``SourceOnly`` with the same network (forward, CE, backward, SGD step): the plain fine-tuning step.
- ``asg``: + the frozen ImageNet model's forward (no grad) and the KL through the frozen classifier.
- ``asg_l2o``: ASG with the ``LayerwiseLR`` callback deciding every ``--l2o_interval`` steps.
- ``csg``: + two RandAugment views, the frozen key encoder's forward, A-pool, projection heads, InfoNCE against a
  queue of ``--queue`` negatives per stage, EMA and enqueue; ``csg_noviews`` without the views.
- ``frozen_forward``: one forward of the frozen network alone, so ``finetune + frozen_forward`` is the expected
  cost of the extra pass.

Same weights and in-memory batch for all; rounds interleaved; medians and ratios to ``finetune`` are printed.

    python benchmarks/asg_csg_step.py --backbone tf_efficientnet_lite0 --size 96 --batch 16 --steps 6 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_overhead import RepeatBatch, StepTimer  # noqa: E402

from syn2real.callbacks.layerwise_lr import LayerwiseLR  # noqa: E402
from syn2real.methods import ASG, CSG, OptimConfig, SourceOnly  # noqa: E402
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig  # noqa: E402

warnings.filterwarnings("ignore")


def lightning_steps(method: L.LightningModule, batch: dict, steps: int, accelerator: str,
                    callbacks: list | None = None) -> list[float]:
    timer = StepTimer()
    loader = torch.utils.data.DataLoader(RepeatBatch(batch, steps + 1), batch_size=None)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[timer, *(callbacks or [])], log_every_n_steps=50,
    )
    trainer.fit(method, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]


@torch.no_grad()
def frozen_forward_times(model: torch.nn.Module, x: torch.Tensor, steps: int) -> list[float]:
    model.eval()
    out = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--view_chunk", type=int, default=1)
    parser.add_argument("--l2o_interval", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    batch = {"source": (x, y), "target": (x.clone(), torch.full_like(y, -1))}
    net = NetworkConfig(backbone=args.backbone, num_classes=args.classes, in_chans=3, bottleneck_dim=512,
                        bottleneck_norm=False)
    optim = OptimConfig(name="sgd", lr=1e-4, momentum=0.9, weight_decay=5e-4, backbone_lr_mult=0.1)
    templates = {
        "finetune": SourceOnly(task=Classification(network=net), optim=optim),
        "asg": ASG(task=Classification(network=net), optim=optim, flip_eval=False),
        "csg": CSG(task=Classification(network=net), optim=optim, queue_size=args.queue, view_chunk=args.view_chunk, flip_eval=False),
        "csg_noviews": CSG(task=Classification(network=net), optim=optim, queue_size=args.queue, views="none", flip_eval=False),
    }
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    times: dict[str, list[float]] = {k: [] for k in [*templates, "asg_l2o", "frozen_forward"]}
    for _ in range(args.rounds):
        for name, template in templates.items():
            times[name] += lightning_steps(copy.deepcopy(template), batch, args.steps, args.accelerator)
        times["asg_l2o"] += lightning_steps(copy.deepcopy(templates["asg"]), batch, args.steps, args.accelerator,
                                            [LayerwiseLR(interval=args.l2o_interval, rollout=2, filename=None)])
        times["frozen_forward"] += frozen_forward_times(copy.deepcopy(templates["asg"].guide).to(device),
                                                        x.to(device), args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["finetune"]
    result = {
        "backbone": args.backbone, "size": args.size, "batch": args.batch, "queue": args.queue,
        "view_chunk": args.view_chunk, "l2o_interval": args.l2o_interval, "steps_per_round": args.steps,
        "rounds": args.rounds,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        **{f"{k}_s_per_step": round(v, 5) for k, v in med.items()},
        **{f"ratio_{k}_over_finetune": round(v / base, 4) for k, v in med.items() if k != "finetune"},
        "ratio_expected_finetune_plus_frozen_forward": round((base + med["frozen_forward"]) / base, 4),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
