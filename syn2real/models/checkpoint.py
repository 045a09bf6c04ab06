"""Loading the task network of a syn2real checkpoint into a model (stage chaining: ``init_checkpoint``,
``source_checkpoint``, ``teacher_checkpoint``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from syn2real.io import read_checkpoint

__all__ = ["load_model_weights"]


def load_model_weights(model: nn.Module, path: str, prefix: str = "model.", optional: tuple[str, ...] = ()) -> None:
    """Load the task network of a syn2real checkpoint (the ``model.*`` entries of any method's state dict:
    source-only, DANN, ADDA's target network, ...) into ``model``, with ``weights_only=True``.

    Raises a clear error for a missing file, a file without a ``state_dict`` and a network mismatch. Parameters whose
    names start with one of ``optional`` may be absent from the checkpoint (they keep their initialisation: e.g. the
    auxiliary classifier of a multi-level segmenter started from a single-level run)."""
    file = Path(path)
    ckpt = read_checkpoint(file, "the .ckpt of a finished stage")
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {file} has no 'state_dict'; expected a Lightning checkpoint written by syn2real")
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"checkpoint {file} has no '{prefix}*' entries; expected a syn2real method checkpoint")
    from syn2real.adversarial.advprop import (
        DualBatchNorm,
        collapse_dual_bn,
        expand_to_dual_bn,
    )

    if any(isinstance(m, DualBatchNorm) for m in model.modules()):
        weights = expand_to_dual_bn(model, weights)  # a plain checkpoint into an AdvProp (dual BatchNorm) network
    elif any(".main." in k for k in weights):
        weights = collapse_dual_bn(weights)  # an AdvProp checkpoint into a plain network: its main BatchNorms
    try:
        if optional:
            missing, unexpected = model.load_state_dict(weights, strict=False)
            missing = [k for k in missing if not k.startswith(optional)]
            if missing or unexpected:
                raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        else:
            model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {file} does not fit the task network (same backbone, num_classes, bottleneck?): {err}"
        ) from err
