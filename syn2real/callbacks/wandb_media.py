"""Pictures a user wants to see: source/target sample grids, confusion matrix, per-class accuracy (classification) or
IoU (segmentation) table, and the method's own pictures (e.g. CyCADA's source | translated | reconstructed rows, a
segmentation method's image | ground truth | prediction and image | prediction | pseudo-label rows in the class
palette).

Logged through any logger with ``log_image`` / ``log_table`` (W&B); the confusion matrix and the latest method
pictures are also saved as PNGs in the run directory so they exist without W&B.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from syn2real.callbacks.checkpoint import side_effect_free
from syn2real.core.display import minmax_unit
from syn2real.core.interfaces import SupportsEvalMedia, SupportsTrainingMedia

__all__ = ["WandbMedia", "confusion_figure", "image_grid"]

log = logging.getLogger(__name__)


def image_grid(x: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """A (C, H, W) grid in [0, 1] of a normalised batch, each image min-max scaled for display."""
    return make_grid(minmax_unit(x.cpu()), nrow=nrow, padding=1)


def confusion_figure(confusion: torch.Tensor, class_names: list[str], title: str, normalised: bool = False) -> Any:
    """Matplotlib figure of a confusion matrix (rows: true class), row-normalised colours; the cells show counts, or
    row fractions with ``normalised`` (segmentation, where counts are pixels)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from mlxtend.plotting import plot_confusion_matrix

    size = max(4.0, 0.5 * len(class_names))
    with np.errstate(invalid="ignore", divide="ignore"):  # rows of classes absent from the labels: 0/0, shown empty
        fig, ax = plot_confusion_matrix(
            conf_mat=confusion.numpy(),
            class_names=class_names,
            show_absolute=not normalised,
            show_normed=normalised,
            colorbar=False,
            figsize=(size, size),
        )
    ax.set_title(title)
    fig.tight_layout()
    return fig


class WandbMedia(L.Callback):
    """Log sample grids every ``every_n_steps`` training batches and, after each evaluation, the confusion
    matrix and per-class accuracy of every evaluated domain.

    A method with a ``training_media(batch) -> {name: (R, N, C, H, W) images in [0, 1]}`` method
    (:class:`~syn2real.core.interfaces.SupportsTrainingMedia`) gets each entry logged at the same period as a grid
    of R rows of N images, and saved as ``<default_root_dir>/media/<name>.png`` (the latest; once more at the end of
    training, from the last batch, so the PNG shows the final model); ``eval_media()`` the same after evaluations.

    Args:
        every_n_steps: period of the sample grids in training batches (0 disables them).
        max_images: images per grid.
        save_confusion_png: also write ``<default_root_dir>/confusion_<domain>.png``.
    """

    def __init__(self, every_n_steps: int = 500, max_images: int = 32, save_confusion_png: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.save_confusion_png = save_confusion_png
        self._batches = 0
        self._last_batch: dict | None = None

    @staticmethod
    def _loggers(trainer: L.Trainer, method: str) -> list[Any]:
        return [lg for lg in trainer.loggers if hasattr(lg, method)]

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The rare-class sampling distribution of the source (``data.rare_class_sampling``), once, as a table:
        class, source pixel frequency, sampling probability, images that qualify."""
        dm = getattr(trainer, "datamodule", None)
        plan = getattr(dm, "rare_class_plan", None)
        if plan is None or getattr(dm, "classes", None) is None:
            return
        rows = [[name, float(f), float(p), int(len(h))]
                for name, f, p, h in zip(dm.classes, plan.frequency, plan.probabilities, plan.holders)]
        for logger in self._loggers(trainer, "log_table"):
            logger.log_table("data/rare_class_sampling", ["class", "source_pixel_frequency", "probability", "images"],
                             rows, step=trainer.global_step)

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # counted in batches: under manual optimisation global_step counts every optimizer's steps
        self._batches += 1
        if isinstance(pl_module, SupportsTrainingMedia) and isinstance(batch, dict):
            self._last_batch = batch
        if not self.every_n_steps or (self._batches - 1) % self.every_n_steps:
            return
        if not isinstance(batch, dict):
            return
        captions = [d for d in ("source", "target") if d in batch]  # paired DA batches; enhancement has its own media
        for logger in self._loggers(trainer, "log_image") if captions else []:
            images = [image_grid(batch[d][0][: self.max_images]) for d in captions]
            logger.log_image("samples/train", images, step=trainer.global_step, caption=captions)
        if isinstance(pl_module, SupportsTrainingMedia):
            self._log_method_media(trainer, pl_module, batch)

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batch = getattr(self, "_last_batch", None)
        if self.every_n_steps and batch is not None:
            was_training = pl_module.training
            pl_module.eval()
            try:
                self._log_method_media(trainer, pl_module, batch)
            finally:
                pl_module.train(was_training)
        self._last_batch = None

    def _log_method_media(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict | None) -> None:
        from torchvision.utils import save_image

        with side_effect_free(pl_module):  # pictures must not change the run (RNG streams, BatchNorm statistics)
            media: dict[str, torch.Tensor] = (
                pl_module.training_media(batch) if batch is not None else pl_module.eval_media()
            )
        for name, rows in media.items():
            if rows.ndim != 5:
                raise ValueError(f"training_media()[{name!r}] must have shape (rows, N, C, H, W), got {tuple(rows.shape)}")
            grid = make_grid(rows.detach().float().cpu().flatten(0, 1), nrow=rows.shape[1], padding=1)
            path = Path(trainer.default_root_dir) / "media" / f"{name.replace('/', '_')}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid, path)
            for logger in self._loggers(trainer, "log_image"):
                logger.log_image(name, [grid], step=trainer.global_step, caption=[name])

    def _log_eval(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if isinstance(pl_module, SupportsEvalMedia):  # e.g. segmentation: image | ground truth | prediction
            self._log_method_media(trainer, pl_module, None)
        # MethodInterface.last_confusion / eval_metrics; a module without them has no tables
        confusion: dict[str, torch.Tensor] = getattr(pl_module, "last_confusion", {})
        metrics = getattr(pl_module, "eval_metrics", {})
        for domain, matrix in confusion.items():
            names = list(metrics[domain].class_names) if domain in metrics else [str(i) for i in range(len(matrix))]
            counts = matrix.sum(dim=1).tolist()
            # a class without labels has no accuracy (None), as in metrics.json, not 0 %
            acc = [None if t == 0 else round(100 * float(d) / t, 2) for d, t in zip(matrix.diag().tolist(), counts)]
            segmentation = getattr(metrics[domain], "per_class", None) == "iou" if domain in metrics else False
            if segmentation:  # per-class IoU table: pixels of the class, IoU, pixel accuracy
                from syn2real.metrics.segmentation import iou_from_confusion

                iou = iou_from_confusion(matrix).tolist()
                columns = ["class", "pixels", "IoU %", "acc %"]
                rows = [[n, int(t), None if v != v else round(100 * v, 2), a]
                        for n, t, v, a in zip(names, counts, iou, acc)]
            else:
                columns = ["class", "n", "acc %"]
                rows = [[n, int(t), a] for n, t, a in zip(names, counts, acc)]
            fig = confusion_figure(matrix, names, f"{domain} ({stage}, epoch {trainer.current_epoch})", segmentation)
            try:
                if self.save_confusion_png:
                    path = Path(trainer.default_root_dir) / f"confusion_{domain}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fig.savefig(path, dpi=100)
                for logger in self._loggers(trainer, "log_table"):
                    logger.log_table(f"{domain}/per_class", columns, rows, step=trainer.global_step)
                for logger in self._loggers(trainer, "log_image"):
                    logger.log_image(f"{domain}/confusion", [fig], step=trainer.global_step)
            finally:
                import matplotlib.pyplot as plt

                plt.close(fig)

    # *_end hooks run after the module's *_epoch_end, where the confusion matrices are computed.
    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_eval(trainer, pl_module, "val")

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_eval(trainer, pl_module, "test")
