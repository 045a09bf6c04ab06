"""Pictures a user wants to see: source/target sample grids, confusion matrix, per-class accuracy table.

Logged through any logger with ``log_image`` / ``log_table`` (W&B); the confusion matrix is also saved
as a PNG in the run directory so it exists without W&B.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

__all__ = ["WandbMedia", "image_grid", "confusion_figure"]

log = logging.getLogger(__name__)


def image_grid(x: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """A (C, H, W) grid in [0, 1] of a normalised batch, each image min-max scaled for display."""
    x = x.detach().float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return make_grid((x - lo) / (hi - lo).clamp_min(1e-6), nrow=nrow, padding=1)


def confusion_figure(confusion: torch.Tensor, class_names: list[str], title: str) -> Any:
    """Matplotlib figure of a confusion matrix (rows: true class), counts and row-normalised colours."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from mlxtend.plotting import plot_confusion_matrix

    size = max(4.0, 0.5 * len(class_names))
    fig, ax = plot_confusion_matrix(
        conf_mat=confusion.numpy(),
        class_names=class_names,
        show_absolute=True,
        show_normed=False,
        colorbar=False,
        figsize=(size, size),
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


class WandbMedia(L.Callback):
    """Log sample grids every ``every_n_steps`` training steps and, after each evaluation, the confusion
    matrix and per-class accuracy of every evaluated domain.

    Args:
        every_n_steps: period of the sample grids (0 disables them).
        max_images: images per grid.
        save_confusion_png: also write ``<default_root_dir>/confusion_<domain>.png``.
    """

    def __init__(self, every_n_steps: int = 500, max_images: int = 32, save_confusion_png: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.save_confusion_png = save_confusion_png

    @staticmethod
    def _loggers(trainer: L.Trainer, method: str) -> list[Any]:
        return [lg for lg in trainer.loggers if hasattr(lg, method)]

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.every_n_steps or trainer.global_step % self.every_n_steps != 1 % self.every_n_steps:
            return
        if not isinstance(batch, dict):
            return
        for logger in self._loggers(trainer, "log_image"):
            images = [image_grid(batch[d][0][: self.max_images]) for d in ("source", "target") if d in batch]
            captions = [d for d in ("source", "target") if d in batch]
            logger.log_image("samples/train", images, step=trainer.global_step, caption=captions)

    def _log_eval(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        confusion: dict[str, torch.Tensor] = getattr(pl_module, "last_confusion", {})
        metrics = getattr(pl_module, "eval_metrics", {})
        for domain, matrix in confusion.items():
            names = list(metrics[domain].class_names) if domain in metrics else [str(i) for i in range(len(matrix))]
            totals = matrix.sum(dim=1).clamp_min(1)
            acc = (matrix.diag() / totals).tolist()
            rows = [[n, int(t), round(100 * a, 2)] for n, t, a in zip(names, matrix.sum(dim=1).tolist(), acc)]
            fig = confusion_figure(matrix, names, f"{domain} ({stage}, epoch {trainer.current_epoch})")
            try:
                if self.save_confusion_png:
                    path = Path(trainer.default_root_dir) / f"confusion_{domain}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fig.savefig(path, dpi=100)
                for logger in self._loggers(trainer, "log_table"):
                    logger.log_table(f"{domain}/per_class", ["class", "n", "acc %"], rows, step=trainer.global_step)
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
