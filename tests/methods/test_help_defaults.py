"""``--model.help`` shows each method's real defaults for its ``None``-defaulted config objects."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
from jsonargparse import ArgumentParser

import syn2real.methods as methods
from syn2real.methods import DANN
from syn2real.methods.module import describe_default

METHODS = [getattr(methods, n) for n in methods.__all__ if inspect.isclass(getattr(methods, n))
           and issubclass(getattr(methods, n), L.LightningModule) and n != "DAMethod"]


def _help(cls: type) -> str:
    parser = ArgumentParser(prog="syn2real", env_prefix=None)
    parser.add_class_arguments(cls, "model")
    return " ".join(parser.format_help().split())  # unwrapped


def test_dann_help_shows_the_values_the_constructor_uses() -> None:
    text = _help(DANN)
    model = DANN()
    compact = text.replace(" ", "")  # help text wraps anywhere, even inside a word
    for value in (model.optim_cfg, model.task, model.network_cfg, model.disc_cfg):
        assert describe_default(value).replace(" ", "") in compact
    assert "scheduler='inv'" in text and "weight_decay=0.001" in text
    assert "unset fields: OptimConfig's own defaults" in text


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_every_method_documents_what_null_means_for_optim(cls: type) -> None:
    text = _help(cls)
    entry = text.split("--model.optim OPTIM", 1)[1].split("(type: OptimConfig", 1)[0]
    assert "``null`` (default) = OptimConfig(" in entry, entry
