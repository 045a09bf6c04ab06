"""``syn2real shift``: accuracy and calibration under increasing shift, from robustness report cards.

Ovadia et al. (2019) compare predictors by how accuracy, NLL, Brier score and ECE move as the corruption severity
grows. Each ``--report LABEL=PATH`` names a ``robustness.json`` (``syn2real robustness``) of one predictor; a label
given several times (seeds, ensembles) is averaged, with the spread shown. Severity 0 is the clean evaluation set,
severities 1-5 the mean over every corruption type of the card. Writes the figure, a JSON of the curves beside it
and, unless ``--no_wandb``, an offline W&B run with both (in ``--wandb_dir``)::

    syn2real shift --report vanilla=runs/a/robustness/robustness.json --report "ensemble of 5=runs/e/robustness.json" \\
        --output docs/images/shift_digits.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

__all__ = ["METRICS", "curves", "main", "read_curve", "summary_rows"]

#: the scores drawn against severity, in the order of the panels
METRICS: tuple[str, ...] = ("acc", "nll", "brier", "ece")
_TITLES = {"acc": "accuracy (%)", "nll": "NLL (nats)", "brier": "Brier score", "ece": "ECE (%)"}


def read_curve(path: str | Path) -> dict[str, list[float]]:
    """Severity 0 (clean) .. 5 of one report: ``{metric: [value per severity]}``; an error names the file and the
    missing part (a card run without corruptions, or written before the uncertainty section existed)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"syn2real shift: cannot read {path}: {err}") from None
    section = report.get("uncertainty", {}) if isinstance(report, dict) else {}
    clean = section.get("conditions", {}).get("clean")
    per_severity = section.get("corruption_severity")
    if clean is None or not per_severity:
        raise SystemExit(f"syn2real shift: {path} has no per-severity uncertainty scores (expected "
                         "uncertainty.conditions.clean and uncertainty.corruption_severity of a `syn2real robustness` "
                         "report with corruptions)")
    severities = sorted(per_severity, key=int)
    rows = [clean, *[per_severity[s] for s in severities]]
    return {m: [float("nan") if r.get(m) is None else float(r[m]) for r in rows] for m in METRICS} | {
        "severity": [0.0, *[float(s) for s in severities]]}


def curves(reports: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """``{label: {"n": reports, "severity": [...], metric: mean per severity, metric + "_std": sample std}}``, labels
    in the order first given."""
    grouped: dict[str, list[dict[str, list[float]]]] = {}
    for label, path in reports:
        grouped.setdefault(label, []).append(read_curve(path))
    out: dict[str, dict[str, Any]] = {}
    for label, items in grouped.items():
        severity = items[0]["severity"]
        if any(c["severity"] != severity for c in items):
            raise SystemExit(f"syn2real shift: the reports of {label!r} were measured at different severities")
        entry: dict[str, Any] = {"n": len(items), "severity": severity}
        for m in METRICS:
            columns = list(zip(*[c[m] for c in items]))
            entry[m] = [statistics.fmean(col) for col in columns]
            entry[m + "_std"] = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in columns]
        out[label] = entry
    return out


def summary_rows(data: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per label: n, then clean / mean over severities 1-5 / severity 5 of accuracy and ECE (%), and the
    mean over severities 1-5 of NLL and Brier."""
    rows = []
    for label, c in data.items():
        def mean(m: str) -> float:  # over severities 1..5 (index 0 is the clean set)
            return statistics.fmean(c[m][1:])

        rows.append([
            label, str(c["n"]),
            f"{100 * c['acc'][0]:.2f}", f"{100 * mean('acc'):.2f}", f"{100 * c['acc'][-1]:.2f}",
            f"{100 * c['ece'][0]:.2f}", f"{100 * mean('ece'):.2f}", f"{100 * c['ece'][-1]:.2f}",
            f"{mean('nll'):.3f}", f"{mean('brier'):.3f}",
        ])
    return rows


SUMMARY_COLUMNS = ["predictor", "n", "acc clean", "acc mean 1-5", "acc sev 5", "ECE clean", "ECE mean 1-5",
                   "ECE sev 5", "NLL mean 1-5", "Brier mean 1-5"]


def plot(data: dict[str, dict[str, Any]], output: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    for ax, m in zip(axes, METRICS):
        scale = 100.0 if m in ("acc", "ece") else 1.0
        for label, c in data.items():
            x = c["severity"]
            y = [scale * v for v in c[m]]
            line, = ax.plot(x, y, marker="o", markersize=3, label=f"{label} (n={c['n']})" if c["n"] > 1 else label)
            if c["n"] > 1:
                s = [scale * v for v in c[m + "_std"]]
                ax.fill_between(x, [a - b for a, b in zip(y, s)], [a + b for a, b in zip(y, s)],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(_TITLES[m])
        ax.set_xlabel("corruption severity (0 = clean)")
        ax.set_xticks(data[next(iter(data))]["severity"])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(output)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syn2real shift", description=__doc__.split("\n\n")[0])
    p.add_argument("--report", action="append", required=True, metavar="LABEL=PATH",
                   help="a robustness.json of one predictor; repeat a label to average several (seeds)")
    p.add_argument("--output", required=True, help="the figure (.png); the curves go beside it as .json")
    p.add_argument("--title", default="accuracy and calibration under corruption (mean over corruption types)")
    p.add_argument("--no_wandb", action="store_true", help="do not write a W&B run")
    p.add_argument("--wandb_dir", default="runs/shift", help="where the (offline) W&B run goes (default runs/shift)")
    return p


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    reports = []
    for item in args.report:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"syn2real shift: --report takes LABEL=PATH, got {item!r}")
        reports.append((label, path))
    data = curves(reports)
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise SystemExit(f"syn2real shift: --output is a .png figure, got {output}")
    plot(data, output, args.title)
    curves_json = output.with_suffix(".json")
    payload = {"reports": [{"label": label, "path": path} for label, path in reports], "curves": data}
    tmp = curves_json.with_name(curves_json.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(curves_json)
    rows = summary_rows(data)
    print("| " + " | ".join(SUMMARY_COLUMNS) + " |")
    print("|" + "---|" * len(SUMMARY_COLUMNS))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"wrote {output} and {curves_json}")
    if not args.no_wandb:
        from PIL import Image

        from syn2real.loggers import SafeWandbLogger

        run = SafeWandbLogger(project="syn2real-robustness", name=f"shift-{output.stem}",
                              save_dir=args.wandb_dir)
        run.log_table("shift/summary", SUMMARY_COLUMNS, rows)
        run.log_table("shift/curves", ["predictor", "severity", *METRICS],
                      [[label, c["severity"][i], *[c[m][i] for m in METRICS]]
                       for label, c in data.items() for i in range(len(c["severity"]))])
        run.log_image("shift/figure", [Image.open(output)])
        run.finalize("success")
    return data
