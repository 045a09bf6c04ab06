"""Training loaders that a run killed mid-epoch continues exactly where it stopped.

Three pieces, used by :meth:`syn2real.data.datamodule.BaseDataModule.make_loader` for every training loader:

- :class:`ResumableSampler`: ``DistributedSampler`` order (one seeded permutation per epoch, rank ``r`` of ``W`` takes
  every ``W``-th index) that yields ``(index, item_seed)`` and can skip the items already consumed in the current pass;
- :class:`SeededItems`: reseeds the dataset's albumentations pipelines with ``item_seed`` before each item, so an
  item's augmentation depends only on (run seed, epoch, pass, dataset size, index) and not on which worker or process
  drew it, nor on how many items the pipeline drew before;
- :class:`ResumableLoader`: a ``DataLoader`` with ``state_dict()`` / ``load_state_dict()`` (Lightning saves these
  for stateful loaders in ``loops.fit_loop.state_dict.combined_loader`` and restores them on a mid-epoch resume).

A *pass* is one iteration over a loader: Lightning's ``max_size_cycle`` starts a new pass of the shorter domain
within the epoch when it runs out; passes get their own item seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import albumentations as A
import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from syn2real.data.datasets import check_batch_shapes
from syn2real.data.transforms import pipelines

__all__ = ["ResumableSampler", "ResumableLoader", "SeededItems", "item_seeds"]


def item_seeds(seed: int, epoch: int, pass_index: int, n: int) -> np.ndarray:
    """One 32-bit seed per dataset index for (run seed, epoch, pass); the dataset size ``n`` decorrelates domains."""
    return np.random.default_rng([seed, epoch, pass_index, n]).integers(0, 2**32, size=n, dtype=np.uint64)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(index, item_seed)`` and resumes a pass after its first ``items``."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int, drop_last: bool) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.next_pass = 0  # passes started in this epoch
        self.current_pass = 0
        self.offset = 0  # items of the current pass skipped at its start (a resumed pass)
        self._resume: dict[str, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.next_pass = 0
        super().set_epoch(epoch)

    def resume(self, epoch: int, pass_index: int, items: int) -> None:
        """Make the next pass, if it belongs to ``epoch``, the pass ``pass_index`` without its first ``items``."""
        self._resume = {"epoch": int(epoch), "pass": int(pass_index), "items": int(items)}

    def begin_pass(self) -> int:
        """Start the next pass (the resumed one, if :meth:`resume` named this epoch); returns the items to skip."""
        skip = 0
        if self._resume is not None:
            if self._resume["epoch"] == self.epoch:  # else the saved epoch had ended: a fresh epoch
                self.next_pass, skip = self._resume["pass"], self._resume["items"]
            self._resume = None
        self.current_pass, self.offset = self.next_pass, skip
        self.next_pass += 1
        return skip

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        # a generator: runs at the first draw, after Lightning's set_epoch for the epoch
        indices = list(super().__iter__())
        skip = self.begin_pass()
        seeds = item_seeds(self.seed, self.epoch, self.current_pass, len(self.dataset))  # type: ignore[arg-type]
        for index in indices[skip:]:
            yield index, int(seeds[index])


class SeededItems(Dataset):
    """``dataset`` indexed by ``(index, item_seed)``: its albumentations pipelines draw from generators seeded with
    ``item_seed`` (the ``k``-th pipeline with ``item_seed + k``); a plain ``index`` leaves them as they are. A longer
    key ``(index, item_seed, *extra)`` (rare-class sampling's class and crop rule) reads
    ``dataset[(index, *extra)]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._pipelines: list[A.BaseCompose] | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed, *extra = key
        if self._pipelines is None:  # found lazily: a worker finds its own copies
            self._pipelines = list(pipelines(self.dataset))
        for k, pipeline in enumerate(self._pipelines):
            s = (seed + k) % 2**32
            pipeline.set_random_state(np.random.default_rng(s), random.Random(s))
        return self.dataset[(index, *extra)] if extra else self.dataset[index]

    def __getitems__(self, keys: list[Any]) -> list[Any]:
        """A batch's items, checked to have one size (naming the files otherwise) before they are stacked."""
        items = [self[key] for key in keys]
        check_batch_shapes(items, [key[0] if isinstance(key, tuple) else key for key in keys], self.dataset)
        return items

    def __getattr__(self, name: str) -> Any:
        # attributes of the wrapped dataset (classes, targets, ...); never called for our own attributes
        if name.startswith("__") or name in {"dataset", "_pipelines"}:
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _PassIterator(Iterator[Any]):
    """One pass of a :class:`ResumableLoader`; the underlying iterator (and its workers' first draws) starts at the
    first ``next``, i.e. after Lightning has set the sampler's epoch."""

    def __init__(self, loader: ResumableLoader) -> None:
        self.loader = loader
        self.iterator: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = DataLoader.__iter__(self.loader)
            self.loader.yielded = 0
        batch = next(self.iterator)
        self.loader.yielded += 1
        return batch

    def __len__(self) -> int:
        return len(self.loader)


class ResumableLoader(DataLoader):
    """Training ``DataLoader`` over a :class:`ResumableSampler` whose position in the current pass is its state.

    Lightning 2.x saves ``state_dict()`` of every stateful training loader in mid-epoch checkpoints and calls
    ``load_state_dict()`` before iterating again on ``--ckpt_path``; a plain map-style loader would restart the epoch
    from its first batch instead (seeing some batches twice and others never).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(self.sampler).__name__}")
        self.yielded = 0  # batches returned by the current pass

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _PassIterator(self)

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        return {
            "epoch": int(sampler.epoch),
            "pass": int(sampler.current_pass),
            "items": int(sampler.offset + self.yielded * (self.batch_size or 1)),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        sampler.resume(state["epoch"], state["pass"], state["items"])
