"""The training time of a run, validation left out: what ``contrastseg compare`` scores runs at equal time by.

Two arms of a comparison rarely cost the same per epoch (the contrastive terms add projectors and a loss), so
equal epochs is not equal compute. :class:`TrainClock` logs how long the run has trained so far at every
validation, in the same ``metrics.csv`` row as the validation scores.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["TrainClock"]


class TrainClock(Callback):
    """Cumulative training wall time in seconds, logged as ``time/train_s`` at the end of every validation.

    The clock runs from the start of each training epoch (and of each training batch, after a validation inside
    an epoch) until a validation starts or the epoch ends: validation and the checkpoints saved after it are left
    out; loading the training batches is counted. The time survives a resume (``fit --ckpt_path last``): it is
    saved in the checkpoint. Nothing is logged in the sanity check or outside ``fit``.
    """

    key = "time/train_s"

    def __init__(self) -> None:
        super().__init__()
        self.train_s = 0.0  # seconds trained before the current stretch
        self._since: float | None = None  # when the current stretch started; None while stopped

    @property
    def elapsed(self) -> float:
        """Seconds trained so far, the running stretch included."""
        running = 0.0 if self._since is None else time.perf_counter() - self._since
        return self.train_s + running

    def _start(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def _stop(self) -> None:
        if self._since is not None:
            self.train_s += time.perf_counter() - self._since
            self._since = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start()  # after a validation inside the epoch (val_check_interval < 1)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        pl_module.log(self.key, float(self.elapsed), sync_dist=True)

    def state_dict(self) -> dict[str, Any]:
        return {"train_s": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_s, self._since = float(state_dict.get("train_s", 0.0)), None
