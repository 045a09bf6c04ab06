"""Aggregate ``metrics.json`` files of several runs (seeds) into mean ± std."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

__all__ = ["aggregate", "main"]


def aggregate(paths: Sequence[str | Path]) -> dict[str, tuple[float, float, int]]:
    """``{metric: (mean, sample std, n)}`` over the numeric entries the files share."""
    if not paths:
        raise ValueError("no metrics.json files given")
    runs = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; expected a run's metrics.json")
        runs.append(json.loads(path.read_text()))
    keys = set.intersection(*(set(r) for r in runs))
    skip = {"epoch", "global_step", "seed", "world_size"}
    out: dict[str, tuple[float, float, int]] = {}
    for key in sorted(keys - skip):
        values = [r[key] for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[key] = (statistics.fmean(values), std, len(values))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``syn2real aggregate RUN/metrics.json ...``: print mean ± std per metric (accuracies in %)."""
    parser = argparse.ArgumentParser(prog="syn2real aggregate", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="metrics.json files, one per run")
    parser.add_argument("--all", action="store_true", help="also show per-class metrics")
    parser.add_argument("--json", help="write the aggregate to this JSON file")
    args = parser.parse_args(argv)
    result = aggregate(args.files)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mean ± std over {len(args.files)} runs")
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    for key, (mean, std, _) in result.items():
        if "/acc_class/" in key and not args.all:
            continue
        scale, unit = (100.0, " %") if "/acc" in key else (1.0, "")
        table.add_row(key, f"{scale * mean:.2f} ± {scale * std:.2f}{unit}")
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"mean": m, "std": s, "n": n} for k, (m, s, n) in result.items()}, indent=2))
