"""The light ``syn2real`` command: help listing every command, ``--version``, ``list``, no heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

import syn2real
from syn2real.command import LIGHTNING_COMMANDS, SUBCOMMANDS, config_summaries, list_main, main, method_summaries


def test_help_lists_every_command_with_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    for name in ["fit", "validate", "test", "predict", "aggregate", "compare", "translate", "robustness", "export",
                 "enhance", "list"]:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(name + " ")), None)
        assert line is not None and len(line.split()) > 2, f"{name} missing from the help:\n{out}"
    assert set(LIGHTNING_COMMANDS) | set(SUBCOMMANDS) >= {"fit", "aggregate", "list"}
    assert "--version" in out


def test_no_arguments_prints_the_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2 and "aggregate" in capsys.readouterr().out


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--version"])
    out = capsys.readouterr().out
    assert out.startswith(f"syn2real {syn2real.__version__} (") and "torch" in out
    assert 'version = { attr = "syn2real.__version__" }' in (REPO / "pyproject.toml").read_text()


def test_unknown_command_names_the_closest() -> None:
    with pytest.raises(SystemExit, match="unknown command 'fitt'; did you mean 'fit'"):
        main(["fitt"])


def test_list_methods_matches_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    import lightning as L

    import syn2real.methods as methods

    expected = {
        name for name in methods.__all__
        if isinstance(getattr(methods, name), type) and issubclass(getattr(methods, name), L.LightningModule)
        and getattr(methods, name).__module__ != "syn2real.methods.base"
    }
    summaries = method_summaries()
    assert set(summaries) == expected
    assert summaries["DANN"].startswith("Domain-adversarial training")
    list_main(["methods", "*dan*"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["syn2real.methods.CDAN", "syn2real.methods.DANN"]


def test_list_backbones_from_timm_with_a_filter(capsys: pytest.CaptureFixture[str]) -> None:
    list_main(["backbones", "digits*"])
    assert capsys.readouterr().out.split() == ["digits_cnn"]
    list_main(["backbones", "resnet1*"])
    assert "resnet18" in capsys.readouterr().out.split()
    with pytest.raises(SystemExit, match="no timm backbone matches 'no_such_net'"):
        list_main(["backbones", "no_such_net"])


def test_list_configs_of_the_repo_and_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    list_main(["configs", "digits/*"])
    out = capsys.readouterr().out
    rows = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert rows["digits/dann.yaml"].startswith("DANN") and rows["digits/dann.yaml"].endswith("[after digits/base.yaml]")
    assert rows["digits/robust/pgd.yaml"].endswith("[after digits/robust/base.yaml]")
    assert rows["digits/base.yaml"].startswith("[base of digits/: give it first]")
    assert "[after" not in rows["digits/ablations/no_batchnorm.yaml"]  # an overlay: after the method's file
    assert "--config configs/digits/base.yaml --config configs/digits/dann.yaml" in out
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.yaml").write_text("# what x does\nseed_everything: 0\n")
    (tmp_path / "y.yaml").write_text("trainer: {}\n")
    assert config_summaries(tmp_path) == {"a/x.yaml": "what x does", "y.yaml": ""}
    with pytest.raises(FileNotFoundError, match="pass --root DIR"):
        config_summaries(tmp_path / "missing")


def test_light_commands_import_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import syn2real.command as c\n"
        "for args in (['--help'], ['--version'], ['list', 'methods'], ['list', 'configs'], ['aggregate', '--help'],\n"
        "             ['compare', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        c.main(args)\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'timm', 'wandb') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"light commands imported {done.stdout.strip()}"


def test_console_script_is_the_light_entry_point() -> None:
    assert 'syn2real = "syn2real.command:main"' in (REPO / "pyproject.toml").read_text()
    done = subprocess.run([sys.executable, "-m", "syn2real", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "robustness" in done.stdout
