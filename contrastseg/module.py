"""ContrastSegModule: the LightningModule that owns a segmentation model, its loss terms and its metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from contrastseg._compat import attached_trainer, ddp_ignore_buffers, given_hyperparameters
from contrastseg.callbacks.eval_report import EvalReport
from contrastseg.callbacks.health import MEMORY_TERMS, ContrastHealthMonitor
from contrastseg.callbacks.non_finite import NonFiniteLossGuard
from contrastseg.callbacks.rng_state import RNGState
from contrastseg.errors import ConfigError, DataError
from contrastseg.evaluation.inference import EvalConfig, infer
from contrastseg.evaluation.metrics import group_miou, scores_from_confusion
from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.losses.contrastive import MultiScaleContrast
from contrastseg.losses.cross_entropy import CrossEntropy
from contrastseg.losses.memory import ClassMemory
from contrastseg.models.segmentation import SegmentationNet, SegOutput, predict_classes
from contrastseg.optim import PolyLR

__all__ = ["ContrastSegModule"]


def _hparams_ignore(**objects: Any) -> list[str]:
    """Constructor arguments not to save as hyperparameters.

    Through the CLI, Lightning saves the given config (``class_path`` dicts), which ``load_from_checkpoint``
    re-instantiates, so everything is kept. In plain Python, model and loss *instances* are not hyperparameters:
    their weights are in the state dict.
    """
    if given_hyperparameters() is not None:
        return []
    return [k for k, v in objects.items() if v is not None]


class ContrastSegModule(LightningModule):
    """Segmentation training with pluggable loss terms (cross-entropy, contrastive, ...).

    The objective is ``sum(term.weight * term(output, mask))``; every term is logged as ``train/loss_<name>``
    (and its sub-terms as ``train/loss_<key>``). Validation and test accumulate one confusion matrix over the
    whole split (ignore pixels skipped) and log ``val/mIoU``, ``val/acc`` and ``val/IoU_<class name>``; the scores
    stay in ``last_scores``.

    Every trainer the module runs in gets its side jobs as callbacks (see :meth:`configure_callbacks`): the
    non-finite loss policy (:class:`~contrastseg.callbacks.NonFiniteLossGuard`), the per-class report
    (:class:`~contrastseg.callbacks.EvalReport`), the random streams in checkpoints
    (:class:`~contrastseg.callbacks.RNGState`) and the contrastive health monitor.

    Args:
        net: the segmentation network (a :class:`~contrastseg.models.SegmentationNet`, e.g.
            :class:`~contrastseg.models.SegmentationModel`), or a class/partial called as ``net(num_classes)`` that
            builds it (the CLI form, so ``num_classes`` is linked from the data). It returns a
            :class:`~contrastseg.models.SegOutput`.
        num_classes: number of classes.
        ignore_index: label value excluded from losses and metrics.
        class_names: one name per class, used in logs and tables (``None``: ``class_0`` ...).
        losses: loss terms (default: a single :class:`~contrastseg.losses.CrossEntropy`).
        optimizer: called with the parameters (model and loss terms); default SGD(lr=0.01, momentum=0.9,
            weight_decay=5e-4).
        lr_scheduler: called with the optimizer; stepped every iteration (``scheduler_interval="step"``).
            A :class:`~contrastseg.optim.PolyLR` without ``total_steps`` gets the trainer's step count.
        scheduler_interval: ``"step"`` or ``"epoch"``.
        no_weight_decay: parameters whose name contains one of these substrings get ``weight_decay=0`` (Swin:
            ``["norm", "absolute_pos_embed", "relative_position_bias_table"]``); also applies to loss terms.
        class_groups: named groups of class indices with their own mIoU (linked from the data module: Cityscapes
            categories, CaDIS anatomies / instruments / rare), logged as ``val/mIoU_<group>``.
        palette: one RGB colour per class for visualisations (linked from the data module; saved in checkpoints).
        evaluation: how validate/test/predict infer (whole image, sliding windows, multi-scale + flip); see
            :class:`~contrastseg.evaluation.EvalConfig`.
        nonfinite: what a NaN or infinite training loss does, checked before the backward pass so the weights
            are never touched by it: ``"raise"`` stops the run with :class:`~contrastseg.errors.NonFiniteLossError`
            naming the step, the terms and the batch's files (``LastCheckpoint`` then saves the intact weights);
            ``"skip"`` skips the batch on every process with a warning (counted in ``train/skipped_batches``);
            ``"ignore"`` does not check (saves one host synchronisation per step). The policy of the
            :class:`~contrastseg.callbacks.NonFiniteLossGuard` the module adds; one listed in
            ``trainer.callbacks`` is used instead.
        contrast_health: when a term is a :class:`~contrastseg.losses.MultiScaleContrast` and the trainer has no
            :class:`~contrastseg.callbacks.ContrastHealthMonitor`, add one with its defaults (``False``: none).
            Configure it by listing the callback in ``trainer.callbacks`` instead.

    Example:
        >>> from contrastseg.models import Encoder, SegmentationModel
        >>> module = ContrastSegModule(SegmentationModel(8, encoder=Encoder("resnet18")), num_classes=8)
    """

    def __init__(
        self,
        net: Callable[[int], SegmentationNet],
        *,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        losses: Sequence[LossTerm] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
        no_weight_decay: Sequence[str] = (),
        class_groups: dict[str, Sequence[int]] | None = None,
        evaluation: EvalConfig | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        nonfinite: str = "raise",
        contrast_health: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=_hparams_ignore(net=net, losses=losses, optimizer=optimizer,
                                                         lr_scheduler=lr_scheduler))
        if num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"model.class_names has {len(class_names)} names but num_classes is {num_classes}")
        if nonfinite not in ("raise", "skip", "ignore"):
            raise ConfigError(f"model.nonfinite must be 'raise', 'skip' or 'ignore', got {nonfinite!r}")
        self.nonfinite = nonfinite
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(f"model.scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
        self._class_names_given = bool(class_names)
        self.net = net if isinstance(net, nn.Module) else net(num_classes)
        self.losses = nn.ModuleList(list(losses) if losses is not None else [CrossEntropy()])
        names = [t.name for t in self.losses]
        if len(set(names)) != len(names):
            raise ConfigError(f"model.losses: term names must be unique, got {names}")
        context = LossContext(
            num_classes=num_classes, ignore_index=ignore_index,
            feature_channels=tuple(getattr(self.net, "feature_channels", ())),
            feature_strides=tuple(getattr(self.net, "feature_strides", ())),
        )
        for term in self.losses:
            term.bind(context)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.scheduler_interval = scheduler_interval
        self.no_weight_decay = tuple(no_weight_decay)
        self.class_groups = {k: tuple(v) for k, v in (class_groups or {}).items()}
        self.evaluation = evaluation or EvalConfig()
        self.palette = [tuple(int(v) for v in c) for c in palette] if palette else None
        self.last_scores: dict[str, Any] = {}  # the latest SegScores per stage, for callbacks and notebooks
        self.confmats = nn.ModuleDict({
            stage: MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)
            for stage in ("val", "test")
        })
        # The evaluation loss as a sum and a count synchronised over processes: Lightning's own epoch mean of a
        # logged value divides by an integer mean of the per-process counts, which is wrong when processes score
        # different numbers of images (an evaluation split is not padded to a multiple of the world size).
        self.eval_losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.contrast_health = contrast_health
        # Set by ContrastHealthMonitor for the steps whose gradients it measures.
        self.record_terms, self.recorded_terms = False, {}

    # ------------------------------------------------------------------ forward and loss

    def forward(self, image: Tensor) -> SegOutput:
        """Run the segmentation model on ``image`` ``(B, 3, H, W)``."""
        return self.net(image)

    def compute_loss(self, output: SegOutput, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the loss terms and a dict of every term and sub-term (unweighted) for logging."""
        total = output.logits.new_zeros((), dtype=torch.float32)
        logs: dict[str, Tensor] = {}
        for term in self.losses:
            if term.train_only and not self.training:
                continue
            result = term(output, mask)
            result = result if isinstance(result, TermOutput) else TermOutput(loss=result)
            if self.record_terms:  # for ContrastHealthMonitor's gradient measurement: graph attached
                self.recorded_terms[term.name] = term.weight * result.loss
            total = total + term.weight * result.loss
            logs[term.name] = result.loss.detach()
            logs.update({k: v.detach() for k, v in result.logs.items()})
        return total, logs

    def training_loss(self, image: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward pass and :meth:`compute_loss` of a training batch.

        The terms' label-only work (:meth:`LossTerm.prepare <contrastseg.losses.LossTerm.prepare>`, e.g.
        drawing the contrastive anchors) runs before the forward pass, where its host synchronisation does not
        stall the device.

        Args:
            image: ``(B, 3, H, W)`` images.
            mask: ``(B, H, W)`` labels.

        Returns:
            The weighted objective and the logged terms, as :meth:`compute_loss`.
        """
        for term in self.losses:
            term.prepare(mask)
        return self.compute_loss(self(image), mask)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        loss, logs = self.training_loss(batch["image"], batch["mask"])
        guard = self._nonfinite_guard()
        if guard is not None and not guard.check(self, loss, logs, batch, batch_idx):
            return None  # Lightning skips backward and the optimiser step
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/loss_{k}": v for k, v in logs.items()}, batch_size=bs)
        return loss

    def _nonfinite_guard(self) -> NonFiniteLossGuard | None:
        """The trainer's :class:`~contrastseg.callbacks.NonFiniteLossGuard`: a callback cannot skip a batch, so
        the training step asks it."""
        if attached_trainer(self) is None:
            return None
        return next((c for c in self.trainer.callbacks if isinstance(c, NonFiniteLossGuard)), None)

    def _plain_eval(self) -> bool:
        e = self.evaluation
        return e.mode == "whole" and tuple(e.scales) == (1.0,) and not e.flip

    def predict_scores(self, image: Tensor) -> Tensor:
        """Class scores ``(B, K, H, W)`` at the image size under the configured evaluation mode."""
        return infer(lambda x: self.net(x).logits, image, self.num_classes, self.evaluation)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        if self._plain_eval():
            output = self(batch["image"])
            loss, _ = self.compute_loss(output, batch["mask"])
            self.eval_losses[stage].update(loss.detach(), batch["image"].shape[0])
            self.log(f"{stage}/loss", self.eval_losses[stage], batch_size=batch["image"].shape[0])
            pred = predict_classes(output.logits, batch["mask"].shape[-2:])
        else:  # sliding windows / TTA: no loss, scores at the image size
            pred = predict_classes(self.predict_scores(batch["image"]), batch["mask"].shape[-2:])
        self.confmats[stage].update(pred, batch["mask"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Predicted class per pixel, ``(B, H, W)`` uint8 (int64 beyond 255 classes)."""
        scores = self(batch["image"]).logits if self._plain_eval() else self.predict_scores(batch["image"])
        pred = predict_classes(scores, batch["image"].shape[-2:])
        return pred.to(torch.uint8) if self.num_classes <= 255 else pred

    # ------------------------------------------------------------------ metrics

    def _end_eval_epoch(self, stage: str) -> None:
        confmat = self.confmats[stage]
        scores = scores_from_confusion(confmat.compute())
        confmat.reset()
        if not self.trainer.sanity_checking:  # the sanity check's few batches are not a validation result
            self.last_scores[stage] = scores
        # The confusion matrix is already summed over processes, so every rank holds the same scores; sync_dist
        # only averages identical values (and keeps Lightning from warning).
        metrics = {f"{stage}/mIoU": scores.miou, f"{stage}/acc": scores.acc}
        metrics |= {f"{stage}/IoU_{n}": v for n, v in zip(self.class_names, scores.iou.tolist()) if v == v}
        groups = group_miou(scores, self.class_groups)
        metrics |= {f"{stage}/mIoU_{n}": v for n, v in groups.items() if v == v}  # NaN: nothing of the group seen
        self.log_dict(metrics, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def setup(self, stage: str) -> None:
        # In plain Python the data module's class names are adopted when none were given (the CLI links them).
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        if not self._class_names_given and names is not None and len(names) == self.num_classes:
            self.class_names = tuple(names)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            for term in self.losses:
                term.setup_data(datamodule)  # e.g. median-frequency class weights from the training split
        # Memories are kept identical on every process by their own all-gather: DDP must not broadcast them (before
        # every forward pass, up to hundreds of MB). setup() runs before the strategy wraps the module.
        memories = [n for n, m in self.named_modules() if isinstance(m, ClassMemory)]
        if memories:
            ddp_ignore_buffers(self, [f"{n}.{b}" for n in memories for b in ("entries", "head", "count")])

    def on_after_backward(self) -> None:
        for term in self.losses:
            term.after_backward()  # e.g. enqueue into a memory: not on a skipped batch, before any checkpoint

    # The first batch of every loader and epoch is checked (one host sync per epoch); datasets check every item.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self._check_labels(batch)

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            self._check_labels(batch)

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            self._check_labels(batch)

    def _check_labels(self, batch: Any) -> None:
        if not isinstance(batch, dict) or "mask" not in batch:
            return
        mask = batch["mask"]
        bad = ((mask >= self.num_classes) | (mask < 0)) & (mask != self.ignore_index)
        if bool(bad.any()):
            value = int(mask[bad][0])
            where = ""
            if "name" in batch:
                image_idx = int(bad.flatten(1).any(dim=1).nonzero()[0]) if mask.dim() == 3 else 0
                where = f" in {batch['name'][image_idx]}"
            raise DataError(
                f"label value {value}{where} is outside 0..{self.num_classes - 1} (ignore {self.ignore_index}): "
                f"num_classes={self.num_classes} disagrees with the labels"
            )

    def configure_callbacks(self) -> list[Callback]:
        """The module's side jobs, for every trainer it runs in (the CLI's and a plain ``Trainer``): a
        :class:`~contrastseg.callbacks.NonFiniteLossGuard` with the ``nonfinite`` policy, an
        :class:`~contrastseg.callbacks.EvalReport`, a :class:`~contrastseg.callbacks.ContrastHealthMonitor` for
        runs with a contrastive term (see ``contrast_health``) and an :class:`~contrastseg.callbacks.RNGState`.
        A kind the trainer has already is not added: the user's instance keeps its options."""
        wanted: list[Callback] = [NonFiniteLossGuard(policy=self.nonfinite), EvalReport()]
        if self.contrast_health and any(isinstance(t, (MultiScaleContrast, *MEMORY_TERMS)) for t in self.losses):
            wanted.append(ContrastHealthMonitor())
        wanted.append(RNGState())  # last: it sets the random streams after the other callbacks' on_train_start
        # A callback returned here would replace a trainer's callback of its type.
        return [c for c in wanted if not any(isinstance(have, type(c)) for have in self.trainer.callbacks)]

    # ------------------------------------------------------------------ optimisation

    def _schedule_length(self) -> int:
        """PolyLR's ``total_steps`` from the trainer: optimiser steps, or epochs when stepped per epoch."""
        if self.scheduler_interval == "step":
            return int(self.trainer.estimated_stepping_batches)
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 1:
            raise ConfigError("model.scheduler_interval 'epoch' with PolyLR needs trainer.max_epochs, or set "
                              "model.lr_scheduler.init_args.total_steps (in epochs)")
        return int(self.trainer.max_epochs)

    def configure_optimizers(self) -> Any:
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        exempt = [p for n, p in named if any(key in n for key in self.no_weight_decay)]
        rest = [p for n, p in named if not any(key in n for key in self.no_weight_decay)]
        params: Any = [p for _, p in named]
        if exempt:
            params = [{"params": rest}, {"params": exempt, "weight_decay": 0.0}]
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        else:
            optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, PolyLR) and scheduler.total_steps is None:
            scheduler.total_steps = self._schedule_length()
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
