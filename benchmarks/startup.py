"""Cold start of the ``syn2real`` command vs ``python -c pass``, side by side.

Each round runs, as fresh processes, ``python -c pass`` and every command under test (``syn2real --help``,
``syn2real aggregate --help``, ...), interleaved so machine drift hits all alike; the median wall time of each
is reported with its ratio to the bare interpreter. The command is started as ``python -m syn2real`` (the same
``main`` as the ``syn2real`` console script, without depending on how the package was installed); ``--entry``
picks another module, e.g. ``syn2real.cli`` for the old entry point.

    python benchmarks/startup.py --rounds 5
    python benchmarks/startup.py --entry syn2real.cli --command=--help --command='aggregate --help'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_COMMANDS = ["--help", "--version", "list methods", "aggregate --help", "fit --help"]


def cold_start(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process running ``argv`` to completion (its output discarded)."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` where there is one, else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the rounds and print one line per command: median seconds and ratio to ``python -c pass``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per command (median reported)")
    parser.add_argument("--entry", default="syn2real", help="module run with `python -m` (default: syn2real)")
    parser.add_argument("--command", action="append", dest="commands", default=None,
                        help="arguments after `syn2real`, split on spaces; repeatable, written with `=`, e.g. "
                             f"--command='aggregate --help' (default: {DEFAULT_COMMANDS})")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians and ratios here")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    runs = {"python -c pass": [sys.executable, "-c", "pass"]}
    for command in args.commands or DEFAULT_COMMANDS:
        runs[f"syn2real {command}"] = [sys.executable, "-m", args.entry, *command.split()]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for argv_ in runs.values():  # warm the file cache once: "cold" means a new interpreter, not a cold disk
        cold_start(argv_, env)
    for _ in range(args.rounds):
        for name, argv_ in runs.items():
            times[name].append(cold_start(argv_, env))
    base = statistics.median(times["python -c pass"])
    result = {}
    print(f"{os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}, {args.rounds} rounds, "
          f"entry `python -m {args.entry}`")
    for name, values in times.items():
        median = statistics.median(values)
        result[name] = {"median_s": round(median, 3), "ratio": round(median / base, 2)}
        print(f"{name:32s} {median:7.3f} s  x{median / base:6.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
