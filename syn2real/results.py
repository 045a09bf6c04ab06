"""Aggregate ``metrics.json`` (or ``robustness.json``) files of several runs (seeds) into mean ± std."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

__all__ = ["aggregate", "compare", "main", "selection_study"]

# label-free criteria (all: higher is better) and the label-honest source criterion, vs the target-label oracle
SELECTION_CRITERIA = [
    "target/validator/entropy",
    "target/validator/infomax",
    "target/validator/snd",
    "source/acc",
]


def _flatten(record: dict, prefix: str = "") -> dict:
    """Nested mappings (e.g. ``robustness.json``) as ``a/b/c`` keys; lists are left as they are."""
    out: dict = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def aggregate(paths: Sequence[str | Path]) -> dict[str, tuple[float, float, int]]:
    """``{metric: (mean, sample std, n)}`` over the numeric entries the files share; ``null`` values (e.g. the
    accuracy of a class absent from a run's labels) are left out, so ``n`` counts the runs where it is defined."""
    if not paths:
        raise ValueError("no metrics.json files given")
    runs = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; expected a run's metrics.json")
        runs.append(_flatten(json.loads(path.read_text())))
    keys = set.intersection(*(set(r) for r in runs))
    skip = {"epoch", "global_step", "seed", "world_size", "code/threads", "n_images", "pgd/steps", "spatial/grid_size",
            "spatial/max_angle", "spatial/max_shift", "calibration/n_fit", "calibration/n_eval", "calibration/n_bins"}
    out: dict[str, tuple[float, float, int]] = {}
    for key in sorted(keys - skip):
        values = [r[key] for r in runs if r[key] is not None]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[key] = (statistics.fmean(values), std, len(values))
    return out


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant or n < 3."""
    if len(a) < 3:
        return None

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    if len(set(ra)) < 2 or len(set(rb)) < 2:
        return None
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var


def selection_study(paths: Sequence[str | Path], target_key: str = "target/acc") -> dict[str, dict[str, float]]:
    """How well each model-selection criterion picks the epoch with the best target accuracy.

    For every run (its ``eval_history`` in ``metrics.json``) and criterion: the target accuracy of the epoch the
    criterion ranks highest, its regret (best epoch's accuracy minus the chosen one's) and the Spearman
    correlation between the criterion and target accuracy over the run's epochs. ``last`` is the final epoch.
    Returns ``{criterion: {"chosen_acc", "regret", "spearman", "runs"}}`` averaged over runs.
    """
    per: dict[str, dict[str, list[float]]] = {}
    for p in paths:
        history = json.loads(Path(p).read_text()).get("eval_history") or []
        history = [h for h in history if target_key in h]
        if not history:
            raise ValueError(f"{p} has no eval_history with {target_key}; it needs a fit with target labels")
        accs = [h[target_key] for h in history]
        best = max(accs)
        for crit in ["last", *SELECTION_CRITERIA]:
            if crit == "last":
                chosen, rho = accs[-1], None
            else:
                if not all(crit in h for h in history):
                    continue
                scores = [h[crit] for h in history]
                chosen = accs[max(range(len(scores)), key=lambda i: scores[i])]
                rho = _spearman(scores, accs)
            slot = per.setdefault(crit, {"chosen_acc": [], "regret": [], "spearman": []})
            slot["chosen_acc"].append(chosen)
            slot["regret"].append(best - chosen)
            if rho is not None:
                slot["spearman"].append(rho)
    return {
        crit: {
            "chosen_acc": statistics.fmean(v["chosen_acc"]),
            "regret": statistics.fmean(v["regret"]),
            "spearman": statistics.fmean(v["spearman"]) if v["spearman"] else float("nan"),
            "runs": len(v["chosen_acc"]),
        }
        for crit, v in per.items()
    }


def _print_selection(files: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    result = selection_study(files)
    table = Table(title=f"model selection over the epochs of {len(files)} runs (target accuracy of the chosen epoch)")
    # criterion names in full (the three validators differ only after "target/validator/"); the numbers give way
    table.add_column("criterion", no_wrap=True, min_width=max(len(c) for c in ["criterion", *result]))
    for col in ("chosen target acc", "regret vs best epoch", "Spearman vs target acc", "runs"):
        table.add_column(col, justify="right")
    for crit, v in result.items():
        table.add_row(crit, f"{100 * v['chosen_acc']:.2f} %", f"{100 * v['regret']:.2f} pts",
                      f"{v['spearman']:.2f}", str(v["runs"]))
    Console().print(table)


COMPARE_KEYS = ["target/acc", "target/acc_class_mean", "target/ece", "source/acc", "target/miou", "target/pixel_acc",
                "wall_time_s"]


def compare(argv: Sequence[str] | None = None) -> None:
    """``syn2real compare NAME=RUN/metrics.json ...``: the main metrics of several runs side by side."""
    parser = argparse.ArgumentParser(prog="syn2real compare", description=compare.__doc__)
    parser.add_argument("runs", nargs="+", help="NAME=path/to/metrics.json")
    args = parser.parse_args(argv)
    columns: list[tuple[str, dict]] = []
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).parent.name, spec
        file = Path(path)
        if not file.is_file():
            raise SystemExit(f"syn2real compare: {file} does not exist; expected a run's metrics.json")
        columns.append((name, json.loads(file.read_text())))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="syn2real: runs side by side")
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right")
    for key in COMPARE_KEYS:
        if not any(isinstance(data.get(key), (int, float)) for _, data in columns):
            continue  # e.g. mIoU rows when comparing classification runs
        row = []
        for _, data in columns:
            v = data.get(key)
            if not isinstance(v, (int, float)):
                row.append("-")
            elif _is_rate(key):
                row.append(f"{100 * v:.2f} %")
            else:
                row.append(f"{v:.1f}" if key == "wall_time_s" else f"{v:.4f}")
        table.add_row(key, *row)
    Console().print(table)


def _is_rate(key: str) -> bool:
    """Fractions shown in %: accuracies, CyCADA's label-flip rates, (m)IoU."""
    last = key.rsplit("/", 1)[-1]
    return (
        "/acc" in key or "/flip" in key or "/teacher_acc" in key or last.endswith("_acc")
        or "/miou" in key or "/iou/" in key
        or key.startswith(("fgsm/", "noise/"))  # robustness.json: accuracy per budget
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``syn2real aggregate RUN/metrics.json ...``: print mean ± std per metric (accuracies in %)."""
    parser = argparse.ArgumentParser(prog="syn2real aggregate", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="metrics.json files, one per run")
    parser.add_argument("--all", action="store_true", help="also show per-class metrics")
    parser.add_argument("--json", help="write the aggregate to this JSON file")
    parser.add_argument("--selection", action="store_true",
                        help="instead: how well each label-free validator picks the best epoch (eval_history)")
    args = parser.parse_args(argv)
    if args.selection:
        _print_selection(args.files)
        return
    result = aggregate(args.files)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mean ± std over {len(args.files)} runs")
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    for key, (mean, std, n) in result.items():
        if "/acc_class/" in key and not args.all:
            continue
        scale, unit = (100.0, " %") if _is_rate(key) else (1.0, "")
        runs = f" ({n} of {len(args.files)} runs)" if n < len(args.files) else ""
        table.add_row(key, f"{scale * mean:.2f} ± {scale * std:.2f}{unit}{runs}")
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"mean": m, "std": s, "n": n} for k, (m, s, n) in result.items()}, indent=2))
