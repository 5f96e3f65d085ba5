"""RNGState: the random streams continue where they were when a run resumes from a checkpoint."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer

__all__ = ["RNGState"]

CHECKPOINT_KEY = "rng_states"  # a top-level key of the checkpoint


def capture_rng_states(world_size: int) -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python random states, as plain types and tensors (so that
    ``torch.load(..., weights_only=True)`` reads them), with the number of processes of the run."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "cuda": torch.cuda.get_rng_state_all() if cuda else None,
        "cuda_current": torch.cuda.get_rng_state() if cuda else None,  # the device this process trains on
        "world_size": world_size,
    }


def restore_rng_states(states: dict[str, Any], world_size: int, device: torch.device) -> None:
    """Set the random streams from :func:`capture_rng_states`'s ``states``; with one process every CUDA device's,
    else only ``device``'s (each process continues from process 0's stream on its own device)."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if torch.cuda.is_available():
        if world_size == 1 and states.get("cuda") is not None:
            torch.cuda.set_rng_state_all(states["cuda"])
        elif states.get("cuda_current") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda_current"], device)


class RNGState(Callback):
    """Saves the torch, CUDA, NumPy and Python random streams in every checkpoint and restores them when training
    resumes from one, so that anchor sampling, dropout and anything else drawn in a training step continue where
    they were: a resumed run ends with the weights of an uninterrupted one.

    The checkpoint holds process 0's streams (Lightning writes it from process 0) under its top-level key
    ``"rng_states"``. Under DDP every process continues from process 0's streams. That is exact: Lightning seeds
    every process alike (``seed_everything``) and each draws the same number of values per step (same shapes on
    every rank), so all processes' streams are identical (``tests/test_resume.py`` compares a resumed two-process
    run). A model that draws a data-dependent number of random values would make them differ; they then all
    continue from process 0's, still a fresh point of the stream rather than its start. A run resumed with another
    number of processes keeps its own streams (they differ from the saved ones anyway).

    :class:`~contrastseg.ContrastSegModule` adds one to every trainer it runs in.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Any] | None = None  # loaded from a checkpoint, set when training starts

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = capture_rng_states(trainer.world_size)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(CHECKPOINT_KEY)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        states, self._pending = self._pending, None
        if not states or states.get("world_size", 1) != trainer.world_size:  # other processes: streams differ
            return
        restore_rng_states(states, trainer.world_size, pl_module.device)
