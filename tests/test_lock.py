"""requirements.lock (what `make demo` / `make test` install) agrees with pyproject.toml: every dependency and dev
extra is locked at a version its range allows, every entry carries hashes, and this environment runs the locked
versions."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = REPO / "requirements.lock"


def _locked() -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, [hashes])}`` from the lock's ``name==version \\ --hash=sha256:...`` entries."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", block)
        if match:
            entries[canonicalize_name(match.group(1))] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *extras.get("dev", []), *extras.get("pretrained", [])]]


def _problems(declared: list[Requirement], locked: dict[str, tuple[str, list[str]]]) -> list[str]:
    problems = []
    for req in declared:
        name = canonicalize_name(req.name)
        if name not in locked:
            problems.append(f"{req} is not in requirements.lock (run `make lock`)")
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{req} but requirements.lock has {name}=={locked[name][0]} (run `make lock`)")
    return problems


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    locked = _locked()
    assert len(locked) > 50 and "torch" in locked and "pytest" in locked
    assert _problems(_declared(), locked) == []


def test_a_range_the_lock_violates_and_an_unlocked_package_are_reported() -> None:
    locked = {"torch": ("2.14.1", ["0" * 64])}
    problems = _problems([Requirement("torch>=2.15"), Requirement("Some_Package>=1")], locked)
    assert problems == ["torch>=2.15 but requirements.lock has torch==2.14.1 (run `make lock`)",
                        "Some_Package>=1 is not in requirements.lock (run `make lock`)"]


def test_every_locked_entry_has_hashes() -> None:
    assert [name for name, (_, hashes) in _locked().items() if not hashes] == []


def test_this_environment_runs_the_locked_versions() -> None:
    mismatched = []
    for name, (version, _) in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched.append(f"{name}: locked {version}, not installed")
            continue
        if installed != version:
            mismatched.append(f"{name}: locked {version}, installed {installed}")
    assert not mismatched, "reinstall with `make install`:\n" + "\n".join(mismatched)
