"""ContrastSegModule: the LightningModule that owns a segmentation model, its loss terms and its metrics."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from rich.console import Console
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from contrastseg._compat import ddp_ignore_buffers
from contrastseg.errors import ConfigError, DataError, NonFiniteLossError
from contrastseg.evaluation.inference import EvalConfig, infer
from contrastseg.evaluation.metrics import group_miou, scores_from_confusion, scores_table, write_scores
from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.losses.cross_entropy import CrossEntropy
from contrastseg.losses.memory import ClassMemory
from contrastseg.models.segmentation import SegmentationNet, SegOutput, predict_classes
from contrastseg.optim import PolyLR
from contrastseg.runs import run_folder

__all__ = ["ContrastSegModule"]


def _hparams_ignore(**objects: Any) -> list[str]:
    """Constructor arguments not to save as hyperparameters.

    Through the CLI, Lightning saves the given config (``class_path`` dicts), which ``load_from_checkpoint``
    re-instantiates, so everything is kept. In plain Python, model and loss *instances* are not hyperparameters:
    their weights are in the state dict.
    """
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    if _given_hyperparameters.get() is not None:
        return []
    return [k for k, v in objects.items() if v is not None]


class ContrastSegModule(LightningModule):
    """Segmentation training with pluggable loss terms (cross-entropy, contrastive, ...).

    The objective is ``sum(term.weight * term(output, mask))``; every term is logged as ``train/loss_<name>``
    (and its sub-terms as ``train/loss_<key>``). Validation and test accumulate one confusion matrix over the
    whole split (ignore pixels skipped) and log ``val/mIoU``, ``val/acc`` and ``val/IoU_<class name>``, then
    print a per-class table.

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
            :class:`~contrastseg.evaluation.EvalConfig`. Scores and per-class tables are also written as
            ``<stage>_metrics.json`` / ``.csv`` in the run folder, beside ``checkpoints/``.
        nonfinite: what a NaN or infinite training loss does, checked before the backward pass so the weights
            are never touched by it: ``"raise"`` stops the run with :class:`~contrastseg.errors.NonFiniteLossError`
            naming the step, the terms and the batch's files (``LastCheckpoint`` then saves the intact weights);
            ``"skip"`` skips the batch on every process with a warning (counted in ``train/skipped_batches``);
            ``"ignore"`` does not check (saves one host synchronisation per step).
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
        self.nonfinite, self.skipped_batches = nonfinite, 0
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

    def _guarded_loss(self, batch: dict[str, Any], batch_idx: int) -> tuple[Tensor | None, dict[str, Tensor]]:
        """:meth:`training_loss` under the ``nonfinite`` policy (BatchNorm state backed up, one host sync for the
        finiteness check); the loss is ``None`` for a batch to skip. ``benchmarks/train_step.py`` times this."""
        if self.nonfinite != "ignore":
            self._backup_buffers()
        loss, logs = self.training_loss(batch["image"], batch["mask"])
        if self.nonfinite != "ignore" and not self._finite(loss, logs, batch, batch_idx):
            return None, logs
        return loss, logs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        loss, logs = self._guarded_loss(batch, batch_idx)
        if loss is None:
            return None  # Lightning skips backward and the optimiser step
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/loss_{k}": v for k, v in logs.items()}, batch_size=bs)
        return loss

    def _state_buffers(self) -> list[Tensor]:
        """Buffers a forward pass changes (BatchNorm statistics, warm-up counters); not the metric states, nor the
        memories of contrastive terms (large, and only written after the backward pass of a batch that was kept).

        Listed once per training run (``on_train_start`` clears the list): walking every module each step would
        cost more than the copy itself.
        """
        if getattr(self, "_buffer_list", None) is None:
            memories = {id(b) for m in self.modules() if isinstance(m, ClassMemory) for b in m.buffers()}
            self._buffer_list = [b for n, b in self.named_buffers()
                                 if not n.startswith(("confmats.", "eval_losses.")) and id(b) not in memories]
        return self._buffer_list

    def _backup_buffers(self) -> None:
        buffers = self._state_buffers()
        if getattr(self, "_buffer_backup", None) is None:  # reset with the buffer list at train start
            self._buffer_backup = [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._buffer_backup, buffers)  # one fused copy; the buffers are small

    def _restore_buffers(self) -> None:
        if getattr(self, "_buffer_backup", None):
            with torch.no_grad():
                torch._foreach_copy_(self._state_buffers(), self._buffer_backup)

    def _finite(self, loss: Tensor, logs: dict[str, Tensor], batch: dict[str, Any], batch_idx: int) -> bool:
        finite = torch.isfinite(loss.detach()).float()
        if self._trainer is not None and self.trainer.world_size > 1:  # every process must skip, or DDP hangs
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        if bool(finite):  # the one host synchronisation of the check
            return True
        self._restore_buffers()  # the forward pass already moved BatchNorm statistics (possibly to NaN)
        bad = [f"{k}={float(v):g}" for k, v in logs.items() if not bool(torch.isfinite(v).all())]
        names = batch.get("name")
        where = f"; batch files: {list(names)[:8]}" if names is not None else ""
        message = (f"non-finite training loss {float(loss.detach()):g} at step {self.global_step} (epoch {self.current_epoch}, "
                   f"batch {batch_idx}); terms: {', '.join(bad) or 'on another process'}{where}")
        if self.nonfinite == "raise":
            raise NonFiniteLossError(message + ". Weights and statistics are as before this batch. Lower the learning rate, "
                                     "check these labels, or set model.nonfinite=skip to skip such batches")
        self.skipped_batches += 1
        rank_zero_warn(message + f"; batch skipped ({self.skipped_batches} so far)")
        self.log("train/skipped_batches", float(self.skipped_batches), batch_size=batch["image"].shape[0])
        return False

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
        # The run folder (beside checkpoints/, for every logger) is broadcast from rank 0: every process must ask,
        # not only rank 0 (or DDP deadlocks). Without a logger there is no run folder, and nothing is written.
        folder = None if self.trainer.sanity_checking or not self.trainer.loggers else run_folder(self.trainer)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            title = f"{stage}, epoch {self.current_epoch}, step {self.global_step}"
            Console().print(scores_table(scores, self.class_names, title=title))
            if groups:
                Console().print("  ".join(f"mIoU {k}: {100 * v:.2f}" for k, v in groups.items()), markup=False)
            if folder is not None:
                write_scores(scores, groups, self.class_names, folder, stage, epoch=self.current_epoch,
                             step=self.global_step)

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

    def configure_callbacks(self) -> list[Any]:
        """A :class:`~contrastseg.callbacks.ContrastHealthMonitor` for runs with a contrastive term (see
        ``contrast_health``), unless the trainer has one already."""
        from contrastseg.callbacks.health import MEMORY_TERMS, ContrastHealthMonitor
        from contrastseg.losses.contrastive import MultiScaleContrast

        if not self.contrast_health or not any(isinstance(t, (MultiScaleContrast, *MEMORY_TERMS)) for t in self.losses):
            return []
        if any(isinstance(c, ContrastHealthMonitor) for c in self.trainer.callbacks):
            return []  # the user's, with their options (a callback returned here would replace it)
        return [ContrastHealthMonitor()]

    # ------------------------------------------------------------------ exact resumption

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Random streams (anchor sampling, dropout, anything drawn in the training step) continue where they were
        # after a resume. The file holds process 0's streams (Lightning writes it from process 0).
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        checkpoint["rng_states"] = {  # plain types and tensors only, so weights_only loading still works
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "cuda": torch.cuda.get_rng_state_all() if cuda else None,
            "cuda_current": torch.cuda.get_rng_state() if cuda else None,  # the device this process trains on
            "world_size": self.trainer.world_size if self._trainer is not None else 1,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_rng = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        self._buffer_list = self._buffer_backup = None  # buffers may have moved device or been replaced
        states, self._pending_rng = getattr(self, "_pending_rng", None), None
        world = self.trainer.world_size
        if not states or states.get("world_size", 1) != world:  # another number of processes: streams differ
            return
        # Under DDP every process continues from process 0's streams. That is exact: Lightning seeds every process
        # alike (seed_everything) and each draws the same number of values per step (same shapes on every rank),
        # so all processes' streams are identical (tests/test_resume.py compares a resumed two-process run). A model
        # that draws a data-dependent number of random values would make them differ; they then all continue from
        # process 0's, still a fresh point of the stream rather than its start.
        torch.set_rng_state(states["torch"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(states["python"])
        if torch.cuda.is_available():
            if world == 1 and states.get("cuda") is not None:
                torch.cuda.set_rng_state_all(states["cuda"])
            elif states.get("cuda_current") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(states["cuda_current"], self.device)

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
