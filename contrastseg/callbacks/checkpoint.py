"""Checkpoints that survive faults: atomic writes, a ``last.ckpt`` kept fresh during and at the end of a run, and
the run folder where both checkpoints and metric files live, for any logger."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "find_last_checkpoint", "run_folder", "runs_folder", "version_folder"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, flush it to disk, then rename it into place.

    A crash, kill or full disk during a save leaves the previous file at that path intact and loadable (a rename
    within one folder is atomic on POSIX file systems). Lightning's own ``TorchCheckpointIO`` opens the target for
    writing directly, so an interrupted save leaves a truncated ``last.ckpt`` and no way back. Remote paths
    (``s3://`` and the like) fall back to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        if get_filesystem(path).protocol not in ("file", ("file", "local")) and "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps, at every epoch's end, at the end of training and when a
    run is stopped.

    Stopped means an exception in training, Ctrl-C, or SIGTERM (a cluster's pre-emption notice): Lightning finishes
    the current batch, and this callback saves before the process exits, so ``--ckpt_path last`` loses nothing.
    After SIGKILL (no notice) the periodic save bounds the loss to ``every_n_train_steps`` steps. The checkpoint
    holds the data module's position in the epoch, so the resumed run continues with the remaining batches.

    Args:
        every_n_train_steps: steps between periodic saves (0: only at the end and when stopped).
        dirpath: folder (default: the logger's ``checkpoints/`` folder, as for ``ModelCheckpoint``).
    """

    def __init__(self, *, every_n_train_steps: int = 500, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps,
                         save_on_exception=True)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Saved here (after the epoch's validation, before Lightning marks the epoch completed) rather than only in
        # on_train_end: Lightning resumes a checkpoint written after the epoch was marked completed one epoch
        # too far (its current_epoch, and so the shuffling, would differ from an uninterrupted run's).
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # ModelCheckpoint saves here only if no last.ckpt was written yet; the periodic one may be stale.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # ModelCheckpoint would also write an "epoch=..-step=.." copy; the fresh last.ckpt is all a resume needs.
        if self._should_save_on_exception(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def runs_folder(trainer: Any) -> Path | None:
    """``<save_dir>/<name>`` of the first logger, which holds one folder per run (``None`` without a logger).

    Args:
        trainer: the Lightning trainer.
    """
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    return Path(logger.save_dir if logger.save_dir is not None else trainer.default_root_dir) / str(logger.name)


def version_folder(version: int | str) -> str:
    """The folder name of a logger version, as ``ModelCheckpoint`` and the loggers spell it (``3`` -> ``version_3``).

    Args:
        version: the logger's version (an int) or run id (a string, kept as is).
    """
    return version if isinstance(version, str) else f"version_{version}"


def run_folder(trainer: Any) -> str:
    """The run's folder: the one ``ModelCheckpoint`` puts its default ``checkpoints/`` folder in.

    That is ``<save_dir>/<name>/<version>`` of the first logger for every logger (for W&B:
    ``<save_dir>/<project>/<run id>``), and the trainer's ``default_root_dir`` without one. Unlike
    ``trainer.log_dir`` (the shared ``save_dir`` for W&B), no two runs share it. Call it on every process: rank 0's
    answer is broadcast.
    """
    runs = runs_folder(trainer)
    if runs is not None:  # the rule of ModelCheckpoint.__resolve_ckpt_dir
        folder = os.path.join(runs, version_folder(trainer.loggers[0].version))
    else:
        folder = str(trainer.default_root_dir)
    return trainer.strategy.broadcast(folder)


def find_last_checkpoint(runs: str | Path | None, *, folders: Iterable[str | Path] = (),
                         accept: Callable[[Path], bool] | None = None) -> Path | None:
    """The most recently written ``last*.ckpt`` of a run name, or ``None``.

    Args:
        runs: the run name's folder (``<save_dir>/<name>``): every ``<runs>/*/checkpoints/`` is searched.
        folders: further checkpoint folders (a checkpoint callback's explicit ``dirpath``).
        accept: optional ``run folder -> bool`` that rejects version folders of another run (W&B projects hold
            the folders of every run in the project).

    Returns:
        The newest existing checkpoint by modification time, or ``None``.
    """
    found = Path(runs).glob("*/checkpoints/last*.ckpt") if runs is not None else ()
    candidates = [p for p in found if accept is None or accept(p.parent.parent)]
    candidates += [p for folder in folders for p in Path(folder).glob("last*.ckpt")]
    candidates = [p for p in candidates if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
