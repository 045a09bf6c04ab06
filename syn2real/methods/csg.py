"""CSG (Chen et al., "Contrastive Syn-to-Real Generalization", ICLR 2021).

Synthetic training collapses feature diversity; CSG keeps the student's stage features close to (and as diverse
as) the frozen ImageNet model's by contrastive learning. For each synthetic image two augmented views are drawn
(RandAugment N=1, M=6): the student encodes the query view, the frozen ImageNet backbone (the key encoder, no
EMA) the key view. At stages 3 and 4 both feature maps are A-pooled and projected (MLP C → C → 128, the key heads
an EMA of the query heads, m = 0.999); InfoNCE against a per-stage queue of 65,536 negatives, τ = 0.07.
L = CE + w · Σ_stages InfoNCE, w = 0.1 (classification; 75 for segmentation).
This is the classification variant; the segmentation variant (contrasting 8×8 chunks of the feature maps) needs
the segmentation task model, which is not in the package yet.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.base import Augmentation
from syn2real.losses.contrastive import apool, hyperspherical_energy, info_nce
from syn2real.methods.base import Batch
from syn2real.methods.generalisation import GeneralisationMethod, asg_network, asg_optim
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.models.contrastive import NegativeQueue, ProjectionHead, ema_update
from syn2real.tasks import Classification, Task
from syn2real.models.imagenet import forward_with_stages, freeze, stage_channels

__all__ = ["CSG", "RandAugmentViews"]


class RandAugmentViews(nn.Module):
    """Random views of a normalised batch: un-normalise to [0, 1], kornia RandAugment (N ops of magnitude M on
    kornia's 0-30 scale), normalise again. Ops are sampled per chunk of ``chunk`` images (1 = per image)."""

    def __init__(self, n: int = 1, m: int = 6, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), chunk: int = 1) -> None:
        super().__init__()
        from kornia.augmentation.auto import RandAugment

        if chunk < 1:
            raise ValueError(f"model.init_args.view_chunk must be >= 1, got {chunk}")
        self.augment = RandAugment(n=n, m=m)
        for p in self.augment.parameters():  # kornia's op probabilities are parameters; they are not trained here
            p.requires_grad_(False)
        self.chunk = int(chunk)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"views: the batch has {x.shape[1]} channels but pixel_mean has {self.mean.shape[1]}")
        pixels = (x.float() * self.std + self.mean).clamp(0, 1)
        out = torch.cat([self.augment(part) for part in pixels.split(self.chunk)])
        return ((out - self.mean) / self.std).to(x.dtype)


@null_defaults(task=lambda: Classification(asg_network()), optim=asg_optim)
class CSG(GeneralisationMethod):
    """Contrastive synthetic-to-real generalisation: CE + ``weight`` · Σ_stages InfoNCE(student, frozen ImageNet).

    Args:
        task / optim / augment / freeze_bn / flip_eval: as for ASG (the paper builds on ASG's code and
            settings; ``network.weights`` are the ImageNet weights the key encoder keeps).
        stages: ``feature_info`` indices contrasted (``[-2, -1]`` = ResNet layer3 and layer4, the paper).
        proj_dim: projection output dimension (128).
        queue_size: negatives per stage (65,536).
        temperature: τ (0.07).
        weight: w (0.1 for classification).
        momentum: EMA momentum of the key projection heads (0.999).
        pooling: ``apool`` (attentional pooling, the paper) or ``avg``.
        apool_similarity: ``dot`` (⟨v_i, v̄⟩) or ``cosine``.
        views: ``randaugment`` (two RandAugment views, the paper) or ``none`` (both views = the input batch).
        randaugment_n / randaugment_m: N = 1, M = 6.
        view_chunk: images sharing one sampled RandAugment op (1 = per image, the paper; larger is faster).
        pixel_mean / pixel_std: the data's ``Normalize`` values (ImageNet's by default).
        energy_every: log the hyperspherical energy of the pooled features every this many steps (0 = never).
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        stages: list[int] | None = None,
        proj_dim: int = 128,
        queue_size: int = 65536,
        temperature: float = 0.07,
        weight: float = 0.1,
        momentum: float = 0.999,
        pooling: Literal["apool", "avg"] = "apool",
        apool_similarity: Literal["dot", "cosine"] = "dot",
        views: Literal["randaugment", "none"] = "randaugment",
        randaugment_n: int = 1,
        randaugment_m: int = 6,
        view_chunk: int = 1,
        pixel_mean: list[float] | None = None,
        pixel_std: list[float] | None = None,
        freeze_bn: bool = True,
        flip_eval: bool = True,
        energy_every: int = 1,
    ) -> None:
        super().__init__(task=task, optim=optim, augment=augment, freeze_bn=freeze_bn, flip_eval=flip_eval)
        if not 0.0 <= momentum <= 1.0 or temperature <= 0 or weight < 0 or queue_size < 1:
            raise ValueError(f"CSG: need 0 <= momentum <= 1, temperature > 0, weight >= 0, queue_size >= 1; got "
                             f"{momentum}, {temperature}, {weight}, {queue_size}")
        if pooling not in ("apool", "avg") or views not in ("randaugment", "none"):
            raise ValueError(f"CSG: pooling must be apool|avg and views randaugment|none, got {pooling!r}, {views!r}")
        self.stage_idx, channels = stage_channels(self.model.backbone, list(stages or [-2, -1]))
        self.temperature, self.weight, self.momentum = float(temperature), float(weight), float(momentum)
        self.pooling, self.apool_similarity = pooling, apool_similarity
        self.energy_every = int(energy_every)
        # the frozen ImageNet backbone as key encoder (a copy of the student's initial weights)
        self.key_encoder = freeze(copy.deepcopy(self.model.backbone))
        self.query_heads = nn.ModuleList(ProjectionHead(c, proj_dim) for c in channels)
        self.key_heads = nn.ModuleList(freeze(copy.deepcopy(h)) for h in self.query_heads)
        self.queues = nn.ModuleList(NegativeQueue(queue_size, proj_dim, seed=i) for i in range(len(channels)))
        n_ch = self.network_cfg.in_chans
        mean = pixel_mean or ([0.485, 0.456, 0.406] if n_ch == 3 else [0.5] * n_ch)
        std = pixel_std or ([0.229, 0.224, 0.225] if n_ch == 3 else [0.5] * n_ch)
        self.views = (RandAugmentViews(randaugment_n, randaugment_m, mean, std, view_chunk)
                      if views == "randaugment" else None)
        self._pending_keys: list[torch.Tensor] | None = None

    def frozen_modules(self) -> list[nn.Module]:
        return [self.key_encoder, *self.key_heads]

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return apool(fmap, self.apool_similarity) if self.pooling == "apool" else fmap.mean(dim=(2, 3))

    @torch.no_grad()
    def keys(self, x_k: torch.Tensor) -> list[torch.Tensor]:
        """Normalised keys (B, proj_dim) per stage from the frozen ImageNet backbone and the EMA heads."""
        _, maps = forward_with_stages(self.key_encoder, x_k, self.stage_idx)
        return [head(self.pool(m)) for head, m in zip(self.key_heads, maps)]

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = self.source_batch(batch)
        x_q, x_k = (self.views(x), self.views(x)) if self.views is not None else (x, x)
        for key_head, query_head in zip(self.key_heads, self.query_heads):
            ema_update(key_head, query_head, self.momentum)
        keys = self.keys(x_k)
        features, maps = forward_with_stages(self.model.backbone, x_q, self.stage_idx)
        logits = self.model.classify(self.model.bottleneck(features))
        ce = F.cross_entropy(logits, y)
        out: dict[str, torch.Tensor] = {"source_ce": ce}
        nce_total = torch.zeros((), device=x.device)
        for i, (head, fmap, k, queue) in enumerate(zip(self.query_heads, maps, keys, self.queues)):
            nce = info_nce(head(self.pool(fmap)), k, queue.keys, self.temperature)
            out[f"info_nce/stage{self.stage_idx[i]}"] = nce
            nce_total = nce_total + nce
        self._pending_keys = keys  # enqueued after the optimizer step (the loss's graph holds the queue)
        out["loss"] = ce + self.weight * nce_total
        out["source_acc"] = (logits.argmax(dim=1) == y).float().mean().detach()
        if self.energy_every and self.global_step % self.energy_every == 0 and features.shape[0] > 1:
            out["hyperspherical_energy"] = hyperspherical_energy(features)
        return out

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        """Enqueue this step's keys of *all* ranks (gathered), in rank order, so every rank holds the same queue."""
        if self._pending_keys is None:
            return
        for queue, k in zip(self.queues, self._pending_keys):
            # (W, B, D) under DDP, (B, D) on one process
            gathered = self.all_gather(k) if self._trainer is not None else k
            queue.enqueue(gathered.reshape(-1, k.shape[-1]))
        self._pending_keys = None

    def param_groups(self) -> list[dict]:
        groups = super().param_groups()
        groups.append({"params": list(self.query_heads.parameters()), "lr": self.optim_cfg.lr, "name": "projection"})
        return groups
