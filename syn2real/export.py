"""``syn2real export --config CFG --ckpt CKPT --output FILE``: the deployable task network of a run.

Writes one file (``torch.load(FILE, weights_only=True)`` reads it) holding the task network's weights, with AdvProp's
auxiliary BatchNorms dropped (only the main BNs, under the key names of the unconverted network), and what is needed
to run it elsewhere: the network config, the class names, the input normalisation (mean/std in [0, 1] pixel units)
and input size, and the evaluation transforms. :func:`load_exported` rebuilds it::

    from syn2real.export import load_exported
    net, info = load_exported("model.pt")  # eval mode
    names = [info.class_names[i] for i in net(info.preprocess(images)).argmax(1)]  # images: (N, C, H, W) uint8

Extra arguments of the command are config overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from syn2real.adversarial.advprop import DualBatchNorm, export_main_bn
from syn2real.io import atomic_torch_save, read_checkpoint

__all__ = ["EXPORT_FORMAT", "ExportedInfo", "export_payload", "load_exported", "main"]

EXPORT_FORMAT = "syn2real-export/2"


@dataclasses.dataclass(frozen=True)
class ExportedInfo:
    """What an exported network needs around it: its task, config, class names, input normalisation and size."""

    task: str
    network: dict[str, Any]
    class_names: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, ...] | None = None
    eval_transforms: list[dict[str, Any]] | None = None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (C, H, W) uint8 pixels -> the float network input (N, C, H, W): ``(x / 255 − mean) / std``
        (raw 0–255 values when the run had no ``Normalize`` step). Resizing to ``input_size`` is the caller's."""
        x = images.unsqueeze(0) if images.ndim == 3 else images
        channels = int(self.network.get("in_chans", x.shape[1]))
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(
                f"preprocess: expected uint8 images of shape (N, {channels}, H, W) or ({channels}, H, W), "
                f"got {tuple(images.shape)}"
            )
        x = x.float()
        if self.mean is None or self.std is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x / 255.0 - mean) / std


def _task_of(network_cfg: Any) -> str:
    from syn2real.models.segmentation import SegNetworkConfig

    return "segmentation" if isinstance(network_cfg, SegNetworkConfig) else "classification"


def export_payload(
    model: nn.Module,
    network_cfg: Any,
    class_names: Sequence[str] | None,
    eval_transforms: list[dict[str, Any]] | None,
    input_size: Sequence[int] | None,
) -> dict[str, Any]:
    """The exported file's content: plain tensors, lists, numbers and strings only (``weights_only`` loads it)."""
    from syn2real.data.transforms import normalize_stats

    mean, std = normalize_stats(eval_transforms) or (None, None)
    network = export_main_bn(model).eval()
    return {
        "format": EXPORT_FORMAT,
        "task": _task_of(network_cfg),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "network": dataclasses.asdict(network_cfg),
        "class_names": list(class_names) if class_names is not None else None,
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "input_size": [int(s) for s in input_size] if input_size is not None else None,
        "eval_transforms": [dict(e) for e in eval_transforms] if eval_transforms is not None else None,
    }


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ExportedInfo]:
    """(network in eval mode on ``device``, :class:`ExportedInfo`) of a file written by ``syn2real export``, read with
    ``weights_only=True``; the network is rebuilt from its config without loading any pretrained weight file."""
    file = Path(path)
    payload = read_checkpoint(file, "a .pt file written by syn2real export")
    missing = [k for k in ("state_dict", "network") if not isinstance(payload, dict) or k not in payload]
    if missing:
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{file} has no {missing}; expected a file written by syn2real export, found {found}")
    task = payload.get("task", "classification")  # files of the first format were classifiers only
    config = {**payload["network"], "weights": None}  # every weight comes from the state dict
    if task == "segmentation":
        from syn2real.models.segmentation import SegNetworkConfig, build_segmenter

        network: nn.Module = build_segmenter(SegNetworkConfig(**config))
    elif task == "classification":
        from syn2real.models.heads import NetworkConfig, build_classifier

        network = build_classifier(NetworkConfig(**config))
    else:
        raise ValueError(f"{file}: unknown task {task!r}; expected 'classification' or 'segmentation'")
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{file}: the weights do not fit the network config {payload['network']}: {err}") from err
    as_tuple = lambda v: tuple(v) if v is not None else None  # noqa: E731
    info = ExportedInfo(
        task=task,
        network=dict(payload["network"]),
        class_names=payload.get("class_names"),
        mean=as_tuple(payload.get("mean")),
        std=as_tuple(payload.get("std")),
        input_size=as_tuple(payload.get("input_size")),
        eval_transforms=payload.get("eval_transforms"),
    )
    return network.to(device).eval(), info


def _first_eval_image_shape(datamodule: Any) -> tuple[int, ...] | None:
    """(C, H, W) of the first evaluation image after the evaluation transforms, or None without evaluation data."""
    loaders = datamodule.val_dataloader()
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    for loader in loaders:
        if len(loader.dataset):
            item = loader.dataset[0]
            image = item[0] if isinstance(item, (tuple, list)) else item
            return tuple(int(s) for s in image.shape)
    return None


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="syn2real export", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, action="append", help="the run's config file (as for fit)")
    p.add_argument("--ckpt", required=True, help="checkpoint of the trained method (.ckpt)")
    p.add_argument("--output", required=True, help="file to write (.pt)")
    args, overrides = p.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    from syn2real.commands.loading import load_trained

    method, datamodule = load_trained("syn2real export", args.config, args.ckpt, overrides)
    datamodule.prepare_data()
    datamodule.setup("validate")  # the class names and the evaluation images' size
    n_dual = sum(isinstance(m, DualBatchNorm) for m in method.model.modules())
    payload = export_payload(
        method.model, method.network_cfg, getattr(datamodule, "classes", None),
        getattr(datamodule, "eval_transforms_spec", None), _first_eval_image_shape(datamodule),
    )
    out = Path(args.output)
    atomic_torch_save(payload, out)
    print(
        f"wrote {out}: {len(payload['state_dict'])} tensors, {len(payload['class_names'] or [])} class names, "
        f"input {payload['input_size']}" + (f", {n_dual} dual BatchNorms reduced to their main BN" if n_dual else "")
    )
    return out
