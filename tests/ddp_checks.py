"""A test-only callback for DDP runs launched through the CLI: at the end of training every rank writes a checksum
of each trained parameter, so a test can check that the ranks ended with the same weights (gradients averaged and
applied identically) even where the run cannot match a single-process one (per-rank image pools, random patches).

Use: ``--trainer.callbacks+ ddp_checks.ParameterChecksums`` with ``tests/`` on ``PYTHONPATH``."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


def read_checksums(run: Path) -> list[dict[str, list[float]]]:
    """The checksums every rank wrote, ordered by rank."""
    return [json.loads(p.read_text()) for p in sorted(run.glob("param_checksums_rank*.json"))]


class ParameterChecksums(L.Callback):
    """Writes ``<default_root_dir>/param_checksums_rank<r>.json``: per parameter, the float64 sum and sum of squares."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sums = {}
        for name, p in pl_module.named_parameters():
            v = p.detach().double()
            sums[name] = [float(v.sum()), float((v * v).sum())]
        out = Path(trainer.default_root_dir) / f"param_checksums_rank{trainer.global_rank}.json"
        out.write_text(json.dumps(sums))
