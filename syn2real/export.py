"""``syn2real export --config CFG --ckpt CKPT --output FILE``: the deployable task network of a run.

Writes ``{"state_dict": ..., "network": {...}}`` (loads with ``torch.load(FILE, weights_only=True)``): the task
network's weights with AdvProp's auxiliary BatchNorms dropped (only the main BNs, under the key names of the
unconverted network), and the network config needed to rebuild it with
:func:`syn2real.models.heads.build_classifier`. Extra arguments are config overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from syn2real.adversarial.advprop import DualBatchNorm, export_main_bn
from syn2real.io import atomic_torch_save

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="syn2real export", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, action="append", help="the run's config file (as for fit)")
    p.add_argument("--ckpt", required=True, help="checkpoint of the trained method (.ckpt)")
    p.add_argument("--output", required=True, help="file to write (.pt)")
    args, overrides = p.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    from syn2real.robustness import load_trained

    method, _ = load_trained("syn2real export", args.config, args.ckpt, overrides)
    n_dual = sum(isinstance(m, DualBatchNorm) for m in method.model.modules())
    network = export_main_bn(method.model).eval()
    payload: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "network": dataclasses.asdict(method.network_cfg),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, out)
    print(f"wrote {out}: {len(payload['state_dict'])} tensors" + (f", {n_dual} dual BatchNorms reduced to their main BN" if n_dual else ""))
    return out
