"""The ``syn2real`` command: ``syn2real COMMAND [ARGS]``, each command's module imported only when it runs.

``--help``, ``--version``, ``list configs|methods`` and the light tools (``aggregate``, ``compare``) answer without
loading torch or Lightning; ``fit``/``validate``/``test``/``predict`` go to :class:`syn2real.cli.Syn2RealCLI`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import fnmatch
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import syn2real

__all__ = ["LIGHTNING_COMMANDS", "SUBCOMMANDS", "Command", "list_main", "main", "version_line"]

PACKAGE_DIR = Path(syn2real.__file__).resolve().parent


class Command(NamedTuple):
    """One of syn2real's own commands: ``module.function(remaining_args)`` and its one-line summary."""

    module: str
    function: str
    summary: str


# Lightning's subcommands, run by Syn2RealCLI (``syn2real fit --help`` lists their options)
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a method from a config; validates on the way, writes checkpoints/ and metrics.json",
    "validate": "evaluate a checkpoint (--ckpt_path) on the validation sets; writes metrics.json",
    "test": "evaluate a checkpoint (--ckpt_path) on the test sets; writes metrics.json",
    "predict": "predict with a checkpoint (--ckpt_path); writes predictions.csv",
}

# syn2real's own commands beside Lightning's
SUBCOMMANDS: dict[str, Command] = {
    "aggregate": Command("syn2real.results", "main",
                         "mean ± std of several runs' metrics.json (seeds), model-selection study"),
    "compare": Command("syn2real.results", "compare", "the main metrics of several runs side by side"),
    "translate": Command("syn2real.translate", "main", "a dataset through a CyCADA generator (source -> target)"),
    "robustness": Command("syn2real.robustness", "main", "the robustness report card of a checkpoint (or ensemble)"),
    "ensemble": Command("syn2real.commands.ensemble", "main",
                        "deep ensembles: train K seeded members, evaluate checkpoints as one predictor"),
    "shift": Command("syn2real.commands.shift", "main",
                     "accuracy, NLL, Brier and ECE against corruption severity, from robustness report cards"),
    "export": Command("syn2real.export", "main", "the deployable task network of a run"),
    "enhance": Command("syn2real.enhance", "main", "low-light images through an EnlightenGAN generator, tile by tile"),
    "list": Command("syn2real.command", "list_main", "the available methods, backbones (timm) or configs"),
}

# Lightning/W&B lines that every run printed and no user can act on; each filtered by its own message only
NOISY_WARNINGS: tuple[str, ...] = (
    # the CLI passes its arguments explicitly (main(args) replaces sys.argv by design)
    r"LightningCLI's args parameter is intended to run from within Python",
    # lightning.pytorch.utilities._pytree uses torch's deprecated LeafSpec check; nothing to change on our side
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
NOISY_LOG_PREFIXES: tuple[str, ...] = ("💡 Tip: For seamless cloud logging",)


def version_line() -> str:
    """``syn2real X (torch Y, lightning Z, Python V)`` from the installed metadata, importing none of them."""
    parts = []
    for dist in ("torch", "lightning"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{dist} {metadata.version(dist)}")
    parts.append(f"Python {sys.version.split()[0]}")
    return f"syn2real {syn2real.__version__} ({', '.join(parts)})"


def help_text() -> str:
    """The top-level help: every command with its one-line summary."""
    width = max(map(len, [*LIGHTNING_COMMANDS, *SUBCOMMANDS])) + 2
    lines = [
        "usage: syn2real [-h] [--version] COMMAND [ARGS ...]",
        "",
        "Domain adaptation and synthetic-to-real training on PyTorch Lightning.",
        "",
        "training and evaluation (LightningCLI: `syn2real fit --config FILE [--key value ...]`):",
        *(f"  {name:{width}}{summary}" for name, summary in LIGHTNING_COMMANDS.items()),
        "",
        "tools:",
        *(f"  {name:{width}}{command.summary}" for name, command in SUBCOMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':{width}}show this message and exit",
        f"  {'--version':{width}}show the version of syn2real (and of torch, lightning) and exit",
        "",
        "`syn2real COMMAND --help` shows a command's options.",
    ]
    return "\n".join(lines)


# -- syn2real list ------------------------------------------------------------------------------------------------
def _first_sentence(docstring: str, limit: int = 110) -> str:
    """The first sentence of a docstring's first paragraph, cut at a word boundary past ``limit`` characters."""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    sentence = paragraph.split(". ")[0]
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit].rsplit(" ", 1)[0] + " …"


def method_summaries(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``{class name: first docstring line}`` of the methods exported by ``syn2real.methods``, read from the source
    (no import: listing stays instant); the shared infrastructure (``methods/base.py``, ``methods/optim.py``) is not a method."""
    methods_dir = package_dir / "methods"
    init = ast.parse((methods_dir / "__init__.py").read_text(encoding="utf-8"))
    exported: dict[str, str] = {}  # name -> module file stem
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("syn2real.methods."):
            for alias in node.names:
                exported[alias.asname or alias.name] = node.module.rsplit(".", 1)[1]
    out: dict[str, str] = {}
    trees: dict[str, ast.Module] = {}
    for name, stem in sorted(exported.items()):
        if stem in ("base", "optim"):  # the shared base and the optimiser settings are not methods
            continue
        if stem not in trees:
            trees[stem] = ast.parse((methods_dir / f"{stem}.py").read_text(encoding="utf-8"))
        for node in trees[stem].body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                out[name] = _first_sentence(ast.get_docstring(node) or "")
    return out


def backbone_names(pattern: str = "*") -> list[str]:
    """timm's registered model names matching ``pattern`` (fnmatch), syn2real's own (``digits_cnn``) included."""
    import timm

    import syn2real.models.backbones  # noqa: F401  (registers syn2real's backbones with timm)

    return list(timm.list_models(pattern))


def default_configs_dir() -> Path | None:
    """The ``configs/`` folder of a source checkout (next to the package), else ``None``."""
    candidate = PACKAGE_DIR.parent / "configs"
    return candidate if candidate.is_dir() else None


def config_summaries(root: Path, pattern: str = "*") -> dict[str, str]:
    """``{path relative to root: its first comment line}`` of the YAML configs under ``root`` matching ``pattern``."""
    if not root.is_dir():
        raise FileNotFoundError(f"configs folder {root} does not exist; pass --root DIR (a folder of YAML configs)")
    out: dict[str, str] = {}
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        rel = path.relative_to(root).as_posix()
        if not fnmatch.fnmatch(rel, pattern):
            continue
        summary = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                summary = line.lstrip("#").strip()
                break
            if line.strip():
                break
        out[rel] = summary
    return out


BASE_CONFIG = "base.yaml"


def base_config(path: Path) -> Path | None:
    """The ``base.yaml`` a method's config composes onto (the one in its folder, given first to ``--config``);
    ``None`` for a base itself, a folder without one and an overlay (a file that names no ``model.class_path``:
    ``trainer/*.yaml``, ``visda17/resnet50.yaml``, ablations), which goes after the method's file."""
    import yaml

    base = path.parent / BASE_CONFIG
    if path.name == BASE_CONFIG or not base.is_file():
        return None
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    model = config.get("model") if isinstance(config, dict) else None
    return base if isinstance(model, dict) and "class_path" in model else None


def config_rows(root: Path, pattern: str = "*") -> dict[str, str]:
    """``syn2real list configs`` rows: each config's summary, a method's with the base it goes after."""
    rows = {}
    for rel, summary in config_summaries(root, pattern).items():
        path = root / rel
        base = base_config(path)
        if path.name == BASE_CONFIG:
            summary = f"[base of {Path(rel).parent.as_posix()}/: give it first] {summary}"
        elif base is not None:
            summary = f"{summary} [after {base.relative_to(root).as_posix()}]"
        rows[rel] = summary
    return rows


def _print_rows(rows: dict[str, str]) -> None:
    width = max(map(len, rows), default=0) + 2
    for name, summary in rows.items():
        print(f"{name:{width}}{summary}".rstrip())


def list_main(argv: Sequence[str] | None = None) -> None:
    """``syn2real list methods|backbones|configs [PATTERN]``: what a config's ``class_path``, ``backbone`` or
    ``--config`` can name."""
    parser = argparse.ArgumentParser(prog="syn2real list", description=list_main.__doc__)
    parser.add_argument("what", choices=["methods", "backbones", "configs"])
    parser.add_argument("pattern", nargs="?", default="*",
                        help="shell-style filter, e.g. 'resnet*' or 'digits/*' (default: everything)")
    parser.add_argument("--root", type=Path, default=None,
                        help="configs: the folder to list (default: configs/ next to the package)")
    args = parser.parse_args(argv)
    if args.what == "methods":
        rows = {f"syn2real.methods.{name}": summary for name, summary in method_summaries().items()
                if fnmatch.fnmatch(name.lower(), args.pattern.lower())}
        _print_rows(rows)
    elif args.what == "backbones":
        names = backbone_names(args.pattern)
        if not names:
            raise SystemExit(f"syn2real list: no timm backbone matches {args.pattern!r}")
        print("\n".join(names))
    else:
        root = args.root or default_configs_dir()
        if root is None:
            raise SystemExit("syn2real list configs: no configs/ folder next to the package (an installed copy); "
                             "pass --root DIR")
        _print_rows(config_rows(root, args.pattern))
        print("\na method's config goes after the base.yaml of its folder, overlays (trainer/, ablations/) after it:\n"
              "  syn2real fit --config configs/digits/base.yaml --config configs/digits/dann.yaml "
              "[--config configs/trainer/gpu.yaml]")


# -- Lightning runs -----------------------------------------------------------------------------------------------
class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


@contextlib.contextmanager
def quiet_known_noise() -> Iterator[None]:
    """Hide the known, unactionable Lightning lines (by message) for the duration; every other warning stays."""
    drop = _DropMessages(NOISY_LOG_PREFIXES)
    # the loggers rank_zero_info writes through (Lightning points lightning_utilities' at its own on import)
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
             "lightning_utilities.core.rank_zero")
    loggers = [logging.getLogger(name) for name in names]
    with warnings.catch_warnings():
        for message in NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


def lightning_args(args: list[str]) -> list[str]:
    """``args`` with syn2real's defaults for Lightning's subcommands: validate/test print syn2real's own metrics
    table, so Lightning's (each epoch-level metric repeated under every dataloader) is off unless ``--verbose true``
    comes later on the line or in a ``--config``."""
    if args and args[0] in ("validate", "test"):
        return [args[0], "--verbose=false", *args[1:]]
    return args


def run_lightning(args: list[str]) -> None:
    """``fit``/``validate``/``test``/``predict`` through Syn2RealCLI, quiet where Lightning is noisy; the progress
    bar is off by default when stdout is not a terminal (log files get the per-evaluation lines instead)."""
    from syn2real.cli import Syn2RealCLI

    from syn2real.loggers import finish_wandb_run

    from syn2real.io import CheckpointReadError
    from syn2real.run_dir import RunDirectoryError

    trainer_defaults = {} if sys.stdout.isatty() else {"enable_progress_bar": False}
    failed = True
    try:
        with quiet_known_noise():
            Syn2RealCLI(args=lightning_args(args), trainer_defaults=trainer_defaults)
        failed = False
    except (RunDirectoryError, CheckpointReadError) as err:
        # what the user asked cannot be done as given (records would be overwritten, nothing to resume, an
        # unreadable checkpoint): the message says what to do, a traceback would only hide it
        raise SystemExit(f"syn2real {args[0]}: error: {err}") from err
    finally:
        finish_wandb_run(failed=failed)


def main(args: list[str] | None = None) -> None:
    """Console entry point: ``syn2real COMMAND [ARGS]`` (``syn2real --help`` lists the commands)."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help"):
        print(help_text())
        if not args:
            raise SystemExit(2)
        return
    if args[0] == "--version":
        print(version_line())
        return
    if args[0] in SUBCOMMANDS:
        module, function, _ = SUBCOMMANDS[args[0]]
        getattr(importlib.import_module(module), function)(args[1:])
        return
    if not args[0].startswith("-") and args[0] not in LIGHTNING_COMMANDS:
        known = [*LIGHTNING_COMMANDS, *SUBCOMMANDS]
        close = difflib.get_close_matches(args[0], known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SystemExit(f"syn2real: unknown command '{args[0]}'{hint} Commands: {', '.join(known)} "
                         "(`syn2real --help`).")
    run_lightning(args)
