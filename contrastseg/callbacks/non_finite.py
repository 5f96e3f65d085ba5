"""NonFiniteLossGuard: a NaN or infinite training loss never reaches the weights nor the BatchNorm statistics."""

from __future__ import annotations

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric

from contrastseg._compat import foreach_copy_
from contrastseg.errors import NonFiniteLossError
from contrastseg.losses.memory import ClassMemory

__all__ = ["NonFiniteLossGuard"]

POLICIES = ("raise", "skip", "ignore")


class NonFiniteLossGuard(Callback):
    """What a NaN or infinite training loss does. The loss is checked before the backward pass, so the weights are
    never touched by it.

    Before every training batch the guard copies the buffers a forward pass changes (BatchNorm statistics, warm-up
    counters; not metric states, nor the memories of contrastive terms, which are written only after the backward
    pass of a batch that was kept), and puts them back when the loss is not finite. A callback cannot skip a batch:
    the module's training step asks :meth:`check` and returns ``None`` (no backward pass, no optimiser step, no
    :meth:`LossTerm.after_backward <contrastseg.losses.LossTerm.after_backward>`) when it says no.

    :class:`~contrastseg.ContrastSegModule` adds one with its ``nonfinite`` policy to every trainer it runs in; one
    listed in ``trainer.callbacks`` is used instead.

    Args:
        policy: ``"raise"`` stops the run with :class:`~contrastseg.errors.NonFiniteLossError` naming the step,
            the terms and the batch's files (``LastCheckpoint`` then saves the intact weights); ``"skip"`` skips
            the batch on every process with a warning (counted in ``skipped_batches`` and logged as
            ``train/skipped_batches``); ``"ignore"`` does not check (one host synchronisation per step less).
    """

    def __init__(self, *, policy: str = "raise") -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"policy must be 'raise', 'skip' or 'ignore', got {policy!r}")
        self.policy = policy
        self.skipped_batches = 0
        self._buffers: list[Tensor] | None = None
        self._backup: list[Tensor] | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._buffers = self._backup = None  # buffers may have moved device or been replaced

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.policy != "ignore":
            self.backup(pl_module)

    def _state_buffers(self, module: nn.Module) -> list[Tensor]:
        # Listed once per training run (on_train_start clears the list): walking every module each step would cost
        # more than the copy itself.
        if self._buffers is None:
            skipped = {id(b) for m in module.modules() if isinstance(m, (Metric, ClassMemory)) for b in m.buffers()}
            self._buffers = [b for b in module.buffers() if id(b) not in skipped]
        return self._buffers

    def backup(self, module: nn.Module) -> None:
        """Copy the buffers a forward pass of ``module`` changes (one fused copy; they are small)."""
        buffers = self._state_buffers(module)
        if self._backup is None:
            self._backup = [b.detach().clone() for b in buffers]
        elif buffers:
            foreach_copy_(self._backup, buffers)

    def _restore(self, module: nn.Module) -> None:
        if self._backup:
            with torch.no_grad():
                foreach_copy_(self._state_buffers(module), self._backup)

    def check(self, module: LightningModule, loss: Tensor, logs: dict[str, Tensor], batch: dict[str, Any],
              batch_idx: int) -> bool:
        """Whether to train on ``loss``, under the policy (always ``True`` for ``"ignore"``).

        One host synchronisation; under DDP the processes agree (every one must skip, or DDP hangs). A loss that is
        not finite puts the buffers back as :meth:`backup` copied them, then raises, or warns and returns ``False``.

        Args:
            module: the module being trained (it logs ``train/skipped_batches``).
            loss: the objective of the batch.
            logs: the named terms, to say which are not finite.
            batch: the batch, with ``"image"`` and optionally ``"name"`` (its files, named in the message).
            batch_idx: the batch's index in the epoch.
        """
        if self.policy == "ignore":
            return True
        finite = torch.isfinite(loss.detach()).float()
        trainer = _trainer_of(module)
        if trainer is not None and trainer.world_size > 1:
            finite = trainer.strategy.reduce(finite, reduce_op="min")
        if bool(finite):
            return True
        self._restore(module)  # the forward pass already moved BatchNorm statistics (possibly to NaN)
        bad = [f"{k}={float(v):g}" for k, v in logs.items() if not bool(torch.isfinite(v).all())]
        names = batch.get("name")
        where = f"; batch files: {list(names)[:8]}" if names is not None else ""
        message = (f"non-finite training loss {float(loss.detach()):g} at step {module.global_step} "
                   f"(epoch {module.current_epoch}, batch {batch_idx}); "
                   f"terms: {', '.join(bad) or 'on another process'}{where}")
        if self.policy == "raise":
            raise NonFiniteLossError(message + ". Weights and statistics are as before this batch. Lower the learning "
                                     "rate, check these labels, or set model.nonfinite=skip to skip such batches")
        self.skipped_batches += 1
        rank_zero_warn(message + f"; batch skipped ({self.skipped_batches} so far)")
        module.log("train/skipped_batches", float(self.skipped_batches), batch_size=batch["image"].shape[0])
        return False


def _trainer_of(module: LightningModule) -> Trainer | None:
    try:
        return module.trainer
    except RuntimeError:  # not attached to a trainer (a benchmark calling the step's parts)
        return None
