"""Pieces the fault-tolerance tests put into real runs (importable by subprocesses run from the repository)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback

from contrastseg.data import SyntheticDataModule
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


def rendezvous(folder: str | Path, parties: int = 2, timeout: float = 300.0) -> None:
    """Wait until ``parties`` processes have called this with the same ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.iterdir()))} of {parties} runs arrived")
        time.sleep(0.05)


class MeetingSyntheticData(SyntheticDataModule):
    """The synthetic data, whose ``prepare_data`` waits for ``parties`` runs: two runs started together then are
    together between the logger choosing its version and creating its folder (where Lightning calls it)."""

    def __init__(self, *, meet: str, parties: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meet, self.parties = meet, parties

    def prepare_data(self) -> None:
        rendezvous(self.meet, self.parties)
