from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset

from syn2real.data.resumable import ResumableLoader, ResumableSampler, SeededItems
from syn2real.data.transforms import build_transform


class Noise(Dataset):
    """Item i: a 4x4 image of i, randomly shifted by the pipeline; returns the image and i."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.transform = build_transform([{"name": "Affine", "translate_px": [-1, 1], "rotate": [-30, 30], "p": 1.0}])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = np.full((8, 8, 1), index * 7 % 255, dtype=np.uint8)
        image[2:5, 3:6] = 255
        return self.transform(image=image)["image"], index


def _loader(n: int = 40, batch_size: int = 4, seed: int = 3) -> ResumableLoader:
    sampler = ResumableSampler(Noise(n), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)
    return ResumableLoader(SeededItems(sampler.dataset), batch_size=batch_size, sampler=sampler, drop_last=True)


def _batches(iterator, k: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(iterator, k))


def test_resumed_loader_continues_the_pass_with_the_same_items_and_augmentations() -> None:
    full = _loader()
    full.sampler.set_epoch(2)
    _batches(iter(full))  # pass 0 of epoch 2
    reference = _batches(iter(full))  # pass 1: other augmentations than pass 0, same order
    first = _loader()
    first.sampler.set_epoch(2)
    _batches(iter(first))
    it = iter(first)
    _batches(it, 3)
    state = first.state_dict()
    assert state == {"epoch": 2, "pass": 1, "items": 12}

    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = _batches(iter(resumed))
    assert len(rest) == len(reference) - 3
    for (xa, ya), (xb, yb) in zip(reference[3:], rest):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    # the next pass is a full one again, and the saved position counts the skipped items
    assert resumed.state_dict() == {"epoch": 2, "pass": 1, "items": 40}
    assert len(_batches(iter(resumed))) == 10


def test_state_of_an_ended_epoch_does_not_skip_in_the_next() -> None:
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "pass": 0, "items": 24})
    loader.sampler.set_epoch(1)
    assert len(_batches(iter(loader))) == 10


def test_augmentation_depends_on_the_item_seed_only() -> None:
    items = SeededItems(Noise(5))
    a, _ = items[(3, 11)]
    items[(1, 12)]
    b, _ = items[(3, 11)]
    c, _ = items[(3, 12)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert items[2][1] == 2 and len(items) == 5 and items.n == 5


def test_loader_workers_load_what_the_main_process_loads() -> None:
    single = _loader()
    sampler = ResumableSampler(Noise(40), num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)
    workers = ResumableLoader(SeededItems(sampler.dataset), batch_size=4, sampler=sampler, drop_last=True,
                              num_workers=2, persistent_workers=True)
    workers.load_state_dict({"epoch": 1, "pass": 0, "items": 8})
    single.load_state_dict({"epoch": 1, "pass": 0, "items": 8})
    for loader in (single, workers):
        loader.sampler.set_epoch(1)
    a, b = _batches(iter(single)), _batches(iter(workers))
    assert len(a) == len(b) == 8
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert _batches(iter(workers), 2)[0][1].tolist() == _batches(iter(single), 1)[0][1].tolist()  # next pass
