"""Time per training step of ``CyCADA`` (through Lightning) vs the bare passes it needs, side by side.

- ``bare_cyclegan``: a plain-torch CycleGAN step: the four generator passes (G_ST, G_TS and the two reconstructions),
  LSGAN + cycle loss, generator backward and Adam step; both discriminators on real vs generated images, backward,
  Adam step.
- ``bare_cycada``: the same plus what CyCADA adds, by hand: three passes of the frozen teacher (semantic consistency,
  gradient through the teacher into the generators) and the task model's forward/backward/step on the translated
  source batch.
- ``lightning``: ``CyCADA.training_step`` through the Lightning loop (manual optimisation, image pool, schedulers,
  logging).

All use the same weights and in-memory batch; rounds are interleaved so machine drift hits each alike; the median
per-step time and the ratios are printed.

    python benchmarks/cycada_step.py --size 28 --batch 64 --ngf 16 --ndf 32 --blocks 6 --steps 10 --rounds 3
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

from syn2real.methods import CyCADA  # noqa: E402
from syn2real.tasks import Classification
from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig  # noqa: E402
from syn2real.models.heads import NetworkConfig  # noqa: E402


def _lsgan(d: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(d, torch.full_like(d, target))


def bare_steps(method: CyCADA, batch: dict, steps: int, device: torch.device, cycada: bool) -> list[float]:
    g_st, g_ts = method.generator_st.to(device), method.generator_ts.to(device)
    d_t, d_s = method.discriminator_t.to(device), method.discriminator_s.to(device)
    teacher, task = method.teacher.to(device).eval(), method.model.to(device).train()
    x_s, y_s = (t.to(device) for t in batch["source"])
    x_t = batch["target"][0].to(device)
    adam = dict(lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(list(g_st.parameters()) + list(g_ts.parameters()), **adam)
    opt_d = torch.optim.Adam(list(d_t.parameters()) + list(d_s.parameters()), **adam)
    opt_task = torch.optim.Adam(task.parameters(), **adam)
    stamps = [time.perf_counter()]
    for _ in range(steps):
        fake_t, fake_s = g_st(x_s), g_ts(x_t)
        rec_s, rec_t = g_ts(fake_t), g_st(fake_s)
        for p in list(d_t.parameters()) + list(d_s.parameters()):
            p.requires_grad_(False)
        loss_g = _lsgan(d_t(fake_t), 1) + _lsgan(d_s(fake_s), 1) + F.l1_loss(rec_s, x_s) + F.l1_loss(rec_t, x_t)
        if cycada:
            with torch.no_grad():
                pseudo = teacher(x_t).argmax(1)
            loss_g = loss_g + F.cross_entropy(teacher(fake_t), y_s) + F.cross_entropy(teacher(fake_s), pseudo)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in list(d_t.parameters()) + list(d_s.parameters()):
            p.requires_grad_(True)
        loss_d = 0.5 * (_lsgan(d_t(x_t), 1) + _lsgan(d_t(fake_t.detach()), 0)) + 0.5 * (
            _lsgan(d_s(x_s), 1) + _lsgan(d_s(fake_s.detach()), 0)
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        if cycada:
            loss_task = F.cross_entropy(task(fake_t.detach()), y_s)
            opt_task.zero_grad(set_to_none=True)
            loss_task.backward()
            opt_task.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def lightning_steps(method: CyCADA, batch: dict, steps: int, accelerator: str) -> list[float]:
    timer = StepTimer()
    loader = torch.utils.data.DataLoader(RepeatBatch(batch, steps + 1), batch_size=None)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
        log_every_n_steps=50,
    )
    trainer.fit(method, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64, help="per domain")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--backbone", default="digits_cnn")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    torch.manual_seed(0)
    x_s = torch.rand(args.batch, args.channels, args.size, args.size) * 2 - 1
    x_t = torch.rand(args.batch, args.channels, args.size, args.size) * 2 - 1
    y = torch.randint(0, 10, (args.batch,))
    batch = {"source": (x_s, y), "target": (x_t, torch.full_like(y, -1), torch.arange(args.batch))}
    template = CyCADA(
        task=Classification(network=NetworkConfig(backbone=args.backbone, num_classes=10, in_chans=args.channels)),
        lambda_semantic=0.0,  # no checkpoint to load here; the teacher passes are timed below with weight 1 instead
        generator=GeneratorConfig(channels=args.channels, ngf=args.ngf, n_blocks=args.blocks),
        discriminator=PatchDiscriminatorConfig(ndf=args.ndf),
    )
    template.lambda_semantic = 1.0  # same passes as with a teacher checkpoint (the teacher's weights do not matter)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

    times: dict[str, list[float]] = {"bare_cyclegan": [], "bare_cycada": [], "lightning": []}
    for _ in range(args.rounds):
        # the first step of each is dropped (allocator, kernel selection)
        times["bare_cyclegan"] += bare_steps(copy.deepcopy(template), batch, args.steps + 1, device, False)[1:]
        times["bare_cycada"] += bare_steps(copy.deepcopy(template), batch, args.steps + 1, device, True)[1:]
        times["lightning"] += lightning_steps(copy.deepcopy(template), batch, args.steps, args.accelerator)
    med = {k: statistics.median(v) for k, v in times.items()}
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    result = {
        "size": args.size, "channels": args.channels, "batch_per_domain": args.batch, "ngf": args.ngf,
        "ndf": args.ndf, "blocks": args.blocks, "backbone": args.backbone, "steps_per_round": args.steps,
        "rounds": args.rounds, "device": device_name, "threads": torch.get_num_threads(),
        **{f"{k}_s_per_step": round(v, 5) for k, v in med.items()},
        "ratio_lightning_over_bare_cycada": round(med["lightning"] / med["bare_cycada"], 4),
        "ratio_bare_cycada_over_bare_cyclegan": round(med["bare_cycada"] / med["bare_cyclegan"], 4),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
