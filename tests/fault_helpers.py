"""Pieces the fault-tolerance tests put into real runs (importable by subprocesses run from the repository)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning import Callback

from contrastseg.losses import LossTerm, TermOutput


class SlowSteps(Callback):
    """Sleeps after every training batch and writes the step count to ``progress`` (so a test can aim a signal)."""

    def __init__(self, seconds: float = 0.2, progress: str | None = None) -> None:
        self.seconds, self.progress = seconds, progress

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress:
            Path(self.progress).write_text(str(trainer.global_step))
        time.sleep(self.seconds)


class NaNAt(LossTerm):
    """A zero loss that is NaN at training step ``step`` (0-based), with a NaN sub-term logged as ``<name>_part``."""

    def __init__(self, step: int, *, name: str = "nan_at", weight: float = 1.0) -> None:
        super().__init__(name=name, weight=weight)
        self.step = step
        self.calls = 0

    def forward(self, output, target) -> TermOutput:
        value = output.logits.sum() * 0
        if self.training:
            if self.calls == self.step:
                value = value + float("nan")
            self.calls += 1
        return TermOutput(loss=value, logs={f"{self.name}_part": value.detach() * 2})


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """The module weights of a checkpoint."""
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
