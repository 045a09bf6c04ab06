"""The data_prep scripts' command lines: one --snake_case style, help text and defaults for every option, the old
dashed spellings still accepted, and ``--help`` without importing torch."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (REPO / "data_prep").glob("*.py"))
REQUIRED = {"gta5": ["--root", "r"], "cityscapes": ["--root", "r"], "synthia": ["--root", "r"],
            "visda17": ["--root", "r"], "lowlight": ["--input", "i", "--output", "o"], "class_stats": ["--list", "l"]}
HEAVY = ("torch", "lightning", "albumentations", "cv2", "timm")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"data_prep_{name}_cli", REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_script_is_covered() -> None:
    assert SCRIPTS == ["cityscapes", "class_stats", "digits", "digits_seg", "gta5", "lowlight", "synthia", "visda17"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_every_option_with_help_and_default(name: str) -> None:
    parser = _script(name).parser()
    text = parser.format_help()
    visible = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]
    assert visible
    for action in visible:
        option = action.option_strings[0]
        assert option.startswith("--") and "-" not in option[2:], f"{name}: {option} is not --snake_case"
        assert action.help and action.help.strip(), f"{name}: {option} has no help"
        assert option in text
        if action.default is not None and not action.required:
            assert f"(default: {action.default})" in " ".join(text.split()), f"{name}: {option} hides its default"
    for alias in (a for a in parser._actions if a.help == argparse.SUPPRESS):
        # an old spelling: the dashed form of a visible option, not shown in --help
        assert alias.option_strings[0] not in text
        assert any(alias.option_strings[0] == "--" + v.option_strings[0][2:].replace("_", "-") for v in visible)


@pytest.mark.parametrize(
    ("name", "old", "new", "value"),
    [
        ("digits", "--n-synthetic", "--n_synthetic", "7"),
        ("digits_seg", "--n-synthetic", "--n_synthetic", "7"),
        ("digits_seg", "--digits-per-canvas", "--digits_per_canvas", "3"),
        ("digits_seg", "--val-size", "--val_size", "9"),
        ("visda17", "--max-per-class", "--max_per_class", "2"),
        ("visda17", "--no-file-check", "--no_file_check", None),
    ],
)
def test_old_dashed_spelling_still_parses(name: str, old: str, new: str, value: str | None) -> None:
    parser = _script(name).parser()
    base = REQUIRED.get(name, [])
    tail = [] if value is None else [value]
    parsed_old = parser.parse_args([*base, old, *tail])
    assert parsed_old == parser.parse_args([*base, new, *tail])
    assert parsed_old != parser.parse_args(base)  # the option took effect


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import importlib.util, sys\n"
        f"for name in {SCRIPTS!r}:\n"
        f"    spec = importlib.util.spec_from_file_location(name, {str(REPO / 'data_prep')!r} + '/' + name + '.py')\n"
        "    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "    try:\n"
        "        module.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]
