"""Progress as one line every few steps, for output that goes to a file (SLURM logs, ``> train.log``).

A progress bar redraws one terminal line; written to a file it becomes a single line at the end of each epoch
(Rich) or thousands of carriage returns (tqdm). :class:`LineProgress` prints a plain line instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks import ProgressBar

__all__ = ["LineProgress"]


class LineProgress(ProgressBar):
    """One line every ``every_n_steps`` training batches, and at the end of each epoch.

    ``epoch 4/15  batch 40/64  step 232  1.84 it/s  train/loss 0.412``: epochs count from 1, then the
    progress-bar metrics (the losses logged with ``prog_bar=True``). The CLI uses it in place of the progress bar
    when the output is not a terminal.

    Args:
        every_n_steps: batches between lines (``None``: the trainer's ``log_every_n_steps``).
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._start = 0.0
        self._done = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start, self._done = time.monotonic(), 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._done += 1
        every = self.every_n_steps or max(1, int(trainer.log_every_n_steps))
        total = self.total_train_batches
        last = isinstance(total, int) and batch_idx + 1 >= total
        if self.is_enabled and ((batch_idx + 1) % every == 0 or last):
            self._line(trainer, pl_module, batch_idx + 1, total)

    def _line(self, trainer: Any, pl_module: Any, batch: int, total: int | float) -> None:
        rate = self._done / max(time.monotonic() - self._start, 1e-9)
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        batches = f"{batch}/{total}" if isinstance(total, int) else str(batch)
        print(f"epoch {trainer.current_epoch + 1}{epochs}  batch {batches}  step {trainer.global_step}  "
              f"{rate:.2f} it/s  {shown}".rstrip(), file=sys.stdout, flush=True)
