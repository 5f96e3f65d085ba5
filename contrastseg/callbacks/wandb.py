"""Weights & Biases side jobs: per-class IoU tables and prediction overlays after each validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from contrastseg.data.transforms import denormalize
from contrastseg.models.segmentation import predict_classes

__all__ = ["WandbMedia"]


class WandbMedia(Callback):
    """Log ``val/per_class_iou`` (a table) and ``val/predictions`` (overlays of the first ``num_images``
    validation images, prediction and ground truth as toggleable masks) to every
    :class:`~lightning.pytorch.loggers.WandbLogger`.

    Args:
        num_images: validation images shown each time (the same ones every epoch).
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Not on_validation_epoch_end: Lightning runs the callbacks' hook before the module's, which computes the
        # scores, so the table would show the previous validation's.
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers:
            return
        import wandb

        names = list(getattr(pl_module, "class_names", []))
        payload: dict[str, Any] = {}
        scores = getattr(pl_module, "last_scores", {}).get("val")
        if scores is not None:
            rows = [[n, _num(i), _num(a), int(p)] for n, i, a, p in
                    zip(names, scores.iou.tolist(), scores.class_acc.tolist(), scores.support.tolist())]
            payload["val/per_class_iou"] = wandb.Table(columns=["class", "IoU", "acc", "pixels"], data=rows)
        images = self._overlays(trainer, pl_module, names, wandb)
        if images:
            payload["val/predictions"] = images
        for logger in loggers:
            logger.experiment.log({**payload, "trainer/global_step": trainer.global_step})

    def _overlays(self, trainer: Trainer, pl_module: LightningModule, names: list[str], wandb: Any) -> list:
        datasets = getattr(trainer.datamodule, "datasets", {}) if trainer.datamodule is not None else {}
        dataset = datasets.get("val")
        if dataset is None or self.num_images == 0:
            return []
        labels = dict(enumerate(names)) | {255: "ignore"}
        out = []
        with torch.no_grad():
            for i in range(min(self.num_images, len(dataset))):
                item = dataset[i]
                image = item["image"][None].to(pl_module.device)
                scores = pl_module.predict_scores(image)  # type: ignore[operator]
                pred = predict_classes(scores, image.shape[-2:])[0].cpu().numpy().astype(np.uint8)
                rgb = denormalize(item["image"])
                masks = {"prediction": {"mask_data": pred, "class_labels": labels},
                         "ground_truth": {"mask_data": item["mask"].numpy().astype(np.uint8), "class_labels": labels}}
                out.append(wandb.Image(rgb, masks=masks, caption=str(item.get("name", i))))
        return out


def _num(value: float) -> float | None:
    return None if value != value else float(value)
