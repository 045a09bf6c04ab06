"""The data-module base: a concrete module that only builds its datasets gets the loader config, the evaluation
domains, the four loaders and resumable training loaders from :class:`BaseDataModule`."""

from __future__ import annotations

import itertools
import types

import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import Dataset

from syn2real.data.datamodule import BaseDataModule, LoaderConfig
from syn2real.data.resumable import ResumableLoader, ResumableSampler


class Numbers(Dataset):
    """Item i: ``(tensor([offset + i]), i)``."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(self.offset + index)]), index


class Tiny(BaseDataModule):
    """Source 10 items, target 7, a target evaluation set and optionally a source one."""

    def __init__(self, source_val: bool = False, **loader: object) -> None:
        super().__init__(LoaderConfig(**loader))  # type: ignore[arg-type]
        self.source_val = source_val
        self.builds = 0

    def build_datasets(self) -> dict[str, Dataset]:
        self.builds += 1
        datasets: dict[str, Dataset] = {
            "source_train": Numbers(10), "target_train": Numbers(7, offset=100),
            "target_eval": Numbers(5, offset=200), "target_predict": Numbers(7, offset=100),
        }
        if self.source_val:
            datasets["source_val"] = Numbers(3, offset=300)
        return datasets


def _items(loader: object) -> list[list[float]]:
    return [batch[0].flatten().tolist() for batch in loader]  # type: ignore[attr-defined]


def test_loader_config_defaults_eval_batch_size_and_checks_keys() -> None:
    cfg = LoaderConfig(batch_size=8)
    assert (cfg.batch_size, cfg.eval_batch_size, cfg.num_workers) == (8, 8, 2)
    assert (cfg.pin_memory, cfg.shuffle, cfg.drop_last) == (False, True, True)
    assert LoaderConfig(batch_size=8, eval_batch_size=3).eval_batch_size == 3
    for kwargs, message in (({"batch_size": 0}, "data.init_args.batch_size must be >= 1, got 0"),
                            ({"eval_batch_size": 0}, "data.init_args.eval_batch_size must be >= 1, got 0"),
                            ({"num_workers": -1}, "data.init_args.num_workers must be >= 0, got -1")):
        with pytest.raises(ValueError, match=message):
            LoaderConfig(**kwargs)  # type: ignore[arg-type]


def test_the_options_are_attributes_of_the_module() -> None:
    dm = Tiny(batch_size=4, eval_batch_size=None, num_workers=0, pin_memory=True, shuffle=False, drop_last=False)
    assert (dm.batch_size, dm.eval_batch_size, dm.num_workers) == (4, 4, 0)
    assert (dm.pin_memory, dm.shuffle, dm.drop_last) == (True, False, False)
    assert dm.classes is None and dm.eval_domains == [] and dm.datasets == {}
    with pytest.raises(RuntimeError, match="after setup"):
        _ = dm.num_classes


def test_setup_builds_once_and_lists_the_evaluation_domains_in_table_order() -> None:
    dm = Tiny(source_val=True, batch_size=4, num_workers=0)
    dm.setup("fit")
    dm.setup("validate")
    assert dm.builds == 1
    assert dm.eval_domains == ["target", "source"]
    without = Tiny(batch_size=4, num_workers=0)
    without.setup("fit")
    assert without.eval_domains == ["target"]


def test_the_four_loaders() -> None:
    dm = Tiny(source_val=True, batch_size=4, eval_batch_size=2, num_workers=0)
    dm.setup("fit")
    train = dm.train_dataloader()
    assert isinstance(train, CombinedLoader)
    batches = [batch for batch, _, _ in train]
    # max_size_cycle: as long as the longer domain (10 // 4 = 2 batches), the shorter one cycles
    assert len(batches) == 2 and all(set(b) == {"source", "target"} for b in batches)
    assert all(b["source"][0].shape == (4, 1) and b["target"][0].shape == (4, 1) for b in batches)
    source_seen = sorted(v for b in batches for v in b["source"][0].flatten().tolist())
    assert len(set(source_seen)) == 8 and set(source_seen) <= set(map(float, range(10)))
    val, test = dm.val_dataloader(), dm.test_dataloader()
    assert [_items(ld) for ld in val] == [_items(ld) for ld in test]
    assert [sum(_items(ld), []) for ld in val] == [[200.0, 201.0, 202.0, 203.0, 204.0], [300.0, 301.0, 302.0]]
    assert [len(ld) for ld in val] == [3, 2]  # eval_batch_size 2, nothing dropped
    assert sum(_items(dm.predict_dataloader()), []) == [float(100 + i) for i in range(7)]


def test_a_module_without_a_prediction_set_keeps_lightnings_error() -> None:
    class NoPredict(Tiny):
        predict_key = None

    dm = NoPredict(batch_size=4, num_workers=0)
    dm.setup("fit")
    with pytest.raises(MisconfigurationException, match="predict_dataloader"):
        dm.predict_dataloader()


def test_training_loaders_are_seeded_resumable_and_sharded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    dm = Tiny(batch_size=2, num_workers=0)
    dm.setup("fit")
    loaders = dm.train_dataloader().flattened
    assert all(isinstance(ld, ResumableLoader) and isinstance(ld.sampler, ResumableSampler) for ld in loaders)
    source = loaders[0]
    assert source.sampler.seed == 5
    source.sampler.set_epoch(1)
    full = _items(source)
    it = iter(source)
    first = _items(itertools.islice(it, 2))
    state = source.state_dict()
    assert state == {"epoch": 1, "pass": 1, "items": 4}
    assert first == full[:2]

    resumed = Tiny(batch_size=2, num_workers=0)
    resumed.setup("fit")
    loader = resumed.train_dataloader().flattened[0]
    loader.load_state_dict(state)
    loader.sampler.set_epoch(1)
    # the same pass of the same seeded permutation, without the two batches already seen
    source.sampler.set_epoch(1)
    source.sampler.next_pass = 1
    assert _items(loader) == _items(source)[2:]

    # rank r of W takes every W-th index of the one seeded permutation: two ranks of batch 1 = one process of batch 2
    single = Tiny(batch_size=2, num_workers=0, drop_last=False)
    single.setup("fit")
    one = _items(single.train_dataloader().flattened[0])
    ranks = []
    for rank in range(2):
        shard = Tiny(batch_size=1, num_workers=0, drop_last=False)
        shard.trainer = types.SimpleNamespace(world_size=2, global_rank=rank)  # type: ignore[assignment]
        shard.setup("fit")
        ranks.append(_items(shard.train_dataloader().flattened[0]))
        # evaluation under DDP: unpadded shards
        assert sum(_items(shard.val_dataloader()[0]), []) == [float(200 + i) for i in range(rank, 5, 2)]
    assert [a + b for a, b in zip(*ranks)] == one
