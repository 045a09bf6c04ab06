"""``syn2real ensemble``: train the K members of a deep ensemble, and evaluate K checkpoints as one predictor.

- ``syn2real ensemble fit --members K --root DIR --config ... [overrides]`` trains member k with
  ``--seed_everything k`` (k = 0..K−1, or from ``--first_seed``) in ``DIR/seed<k>``, one after the other, each as a
  plain ``syn2real fit --ckpt_path auto``: a member whose ``metrics.json`` exists is finished and skipped, an
  interrupted one resumes from its last checkpoint (the convention of ``make results``).
- ``syn2real ensemble test|validate|predict --ckpt A.ckpt --ckpt B.ckpt ... --config ... [overrides]`` evaluates the
  mean of the members' softmax outputs (``--mc_dropout T`` adds T dropout passes per member). It is
  ``syn2real <stage> --ckpt_path A.ckpt --uncertainty.members [B.ckpt, ...]`` with the records of an ensemble's own
  directory: ``--root`` (default ``<common parent of the members' runs>/ensemble``) is treated as a run whose
  evaluations go to ``<root>/eval/<stage>-<time>`` (or ``--eval_name``), so no member's records are touched.
  ``metrics.json`` gets ``<domain>/disagreement`` (mean KL of the members to their mean) beside every usual key.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ensemble_root", "main", "member_dirs"]

STAGES = ("validate", "test", "predict")


def member_dirs(root: str | os.PathLike, members: int, first_seed: int = 0) -> list[tuple[int, Path]]:
    """``[(seed, <root>/seed<seed>)]`` of the K members."""
    if members < 1:
        raise ValueError(f"--members must be >= 1, got {members}")
    return [(s, Path(root) / f"seed{s}") for s in range(first_seed, first_seed + members)]


def run_of(ckpt: str | os.PathLike) -> Path:
    """The run directory of a checkpoint: ``<run>`` for ``<run>/checkpoints/x.ckpt``, else the file's folder."""
    path = Path(ckpt).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def ensemble_root(ckpts: Sequence[str | os.PathLike]) -> Path:
    """Default directory of an ensemble: ``ensemble/`` in the deepest folder holding every member's run."""
    runs = [run_of(c) for c in ckpts]
    common = Path(os.path.commonpath([str(r) for r in runs]))
    if len(runs) == 1 or common in runs:  # a single run, or members inside one run: beside it
        common = common.parent
    return common / "ensemble"


def _fit(args: argparse.Namespace, rest: list[str]) -> None:
    for seed, run in member_dirs(args.root, args.members, args.first_seed):
        if (run / "metrics.json").is_file():
            print(f"syn2real ensemble fit: member seed {seed} finished ({run / 'metrics.json'}), skipped", flush=True)
            continue
        print(f"syn2real ensemble fit: member seed {seed} -> {run}", flush=True)
        command = [sys.executable, "-m", "syn2real.cli", "fit", *rest, "--seed_everything", str(seed),
                   "--trainer.default_root_dir", str(run), "--ckpt_path", "auto"]
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            raise SystemExit(f"syn2real ensemble fit: member seed {seed} failed (exit {done.returncode}); run the "
                             "same command again to resume it")
    ckpts = " ".join(f"--ckpt {run}/checkpoints/best.ckpt" for _, run in member_dirs(args.root, args.members,
                                                                                      args.first_seed))
    print(f"syn2real ensemble fit: {args.members} members in {args.root}; evaluate them with\n"
          f"  syn2real ensemble test {ckpts} {' '.join(rest)}", flush=True)


def _evaluate(args: argparse.Namespace, rest: list[str]) -> None:
    from syn2real.command import run_lightning

    ckpts = [str(c) for c in args.ckpt]
    missing = [c for c in ckpts if not Path(c).is_file()]
    if missing:
        raise SystemExit(f"syn2real ensemble {args.stage}: no checkpoint file {', '.join(missing)}")
    if len(ckpts) < 2 and not args.mc_dropout:
        raise SystemExit(f"syn2real ensemble {args.stage}: an ensemble needs at least two --ckpt (or --mc_dropout T "
                         "for one checkpoint)")
    if any(a == "--ckpt_path" or a.startswith(("--ckpt_path=", "--uncertainty.")) for a in rest):
        raise SystemExit(f"syn2real ensemble {args.stage}: give the members with --ckpt (and --mc_dropout), not "
                         "--ckpt_path / --uncertainty.*")
    root = Path(args.root) if args.root else ensemble_root(ckpts)
    root.mkdir(parents=True, exist_ok=True)
    lightning = [args.stage, *rest, "--ckpt_path", ckpts[0], "--uncertainty.members", json.dumps(ckpts[1:]),
                 "--uncertainty.mc_dropout", str(args.mc_dropout), "--trainer.default_root_dir", str(root)]
    print(f"syn2real ensemble {args.stage}: {len(ckpts)} member(s)"
          f"{f' x {args.mc_dropout} MC dropout passes' if args.mc_dropout else ''}, records under {root / 'eval'}",
          file=sys.stderr, flush=True)
    run_lightning(lightning)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syn2real ensemble", allow_abbrev=False,
        description="Deep ensembles: train K seeded members (fit), or evaluate several checkpoints as one predictor "
        "(validate/test/predict: the mean of their softmax outputs). Unknown arguments (--config FILE, overrides) "
        "go to the Lightning command.",
    )
    p.add_argument("stage", choices=["fit", *STAGES])
    p.add_argument("--members", type=int, default=5, help="fit: number of members K (seeds first_seed..+K-1)")
    p.add_argument("--first_seed", type=int, default=0, help="fit: seed of the first member")
    p.add_argument("--root", default=None, help="fit: the ensemble's folder (members in <root>/seed<k>, required); "
                   "evaluations: the folder whose eval/ gets the records (default <common parent>/ensemble)")
    p.add_argument("--ckpt", action="extend", nargs="+", default=[], help="evaluations: the members' checkpoints")
    p.add_argument("--mc_dropout", type=int, default=0, help="evaluations: T dropout passes per member (0: off)")
    return p


def main(argv: list[str] | None = None) -> None:
    args, rest = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if args.stage == "fit":
        if args.root is None:
            raise SystemExit("syn2real ensemble fit: --root DIR is required (members go to DIR/seed<k>)")
        if args.ckpt or args.mc_dropout:
            raise SystemExit("syn2real ensemble fit: --ckpt / --mc_dropout are for evaluations")
        if any(a == "--seed_everything" or a.startswith(("--seed_everything=", "--trainer.default_root_dir"))
               for a in rest):
            raise SystemExit("syn2real ensemble fit: the seed and run directory of each member are set by the command "
                             "(--first_seed, --root); leave out --seed_everything and --trainer.default_root_dir")
        _fit(args, rest)
    else:
        if args.mc_dropout < 0:
            raise SystemExit(f"syn2real ensemble {args.stage}: --mc_dropout must be >= 0, got {args.mc_dropout}")
        _evaluate(args, rest)
