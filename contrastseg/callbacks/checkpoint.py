"""Checkpoints that survive faults: atomic writes and a ``last.ckpt`` kept fresh during and at the end of a run.
The run folder they live in is :func:`contrastseg.runs.run_folder`."""

from __future__ import annotations

import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from contrastseg._compat import checkpoint_saves_on_exception, checkpoint_skips_saving, save_last_checkpoint
from contrastseg.errors import CheckpointError, ConfigError

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "check_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, flush it to disk, then rename it into place; load with
    ``weights_only=True``; name the file and the cause when either fails.

    A crash, kill or full disk during a save leaves the previous file at that path intact and loadable (a rename
    within one folder is atomic on POSIX file systems). Lightning's own ``TorchCheckpointIO`` opens the target for
    writing directly, so an interrupted save leaves a truncated ``last.ckpt`` and no way back. The file gets the
    permissions of any other file the run writes (``0666`` less the umask), so teammates can read it. Remote paths
    (``s3://`` and the like) fall back to Lightning's writer.

    Loading never unpickles code: ``weights_only=True`` unless the caller passes ``False`` explicitly (Lightning's
    default for a URL is ``False``, so a crafted checkpoint could run code).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        if get_filesystem(path).protocol not in ("file", ("file", "local")) and "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            # os.open with 0o666 applies the umask as every other file of the run (mkstemp would give 0600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            kept = " (the previous checkpoint there is intact)" if target.is_file() else ""
            raise CheckpointError(f"cannot write checkpoint {target}: {err.strerror or err}{kept}") from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None, *,
                        mmap: bool = False) -> dict[str, Any]:
        """Lightning's loading with ``weights_only=True`` by default and one-line errors.

        Args:
            path: file or URL.
            map_location: as ``torch.load``.
            weights_only: ``None`` means ``True``; pass ``False`` only for a file you trust.
            mmap: map a local file instead of reading it (tensors are read when touched).

        Raises:
            CheckpointError: the file is missing, corrupt or truncated, or holds objects that would run code.
        """
        weights_only = True if weights_only is None else weights_only
        try:
            # Lightning's own loader, without its weights_only=False default for URLs (and the keyword, which
            # lightning < 2.6 lacks).
            if str(path).startswith(("http://", "https://")):
                return torch.hub.load_state_dict_from_url(str(path), map_location=map_location,
                                                          weights_only=weights_only)
            if mmap and "://" not in str(path):
                return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=True)
            with get_filesystem(path).open(path, "rb") as f:
                return torch.load(f, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as err:
            raise CheckpointError(f"refusing to load checkpoint {path}: it holds objects other than tensors and plain "
                                  f"types, and unpickling them could run code ({_first_line(err)})") from err
        except FileNotFoundError as err:
            raise CheckpointError(f"cannot load checkpoint {path}: no such file") from err
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(f"cannot load checkpoint {path}: corrupt or truncated ({_first_line(err)})") from err


def check_checkpoint(path: str | Path, *, option: str = "checkpoint") -> None:
    """A one-line error for a checkpoint file that is missing, empty, not a checkpoint, or holds objects that would
    run code when unpickled; reads only the file's structure (memory-mapped), not its tensors.

    Args:
        path: a local file.
        option: how the user named it, for the message (``--ckpt_path``).

    Raises:
        ConfigError: missing, a folder, empty, or not a zip archive (a torch.save file cut short).
        CheckpointError: it does not load with ``weights_only=True``.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(f"{option} {path}: no such file")
    if not file.is_file():
        raise ConfigError(f"{option} {path}: not a file")
    if file.stat().st_size == 0:
        raise ConfigError(f"{option} {path}: the file is empty")
    with file.open("rb") as f:
        legacy = f.read(1) == b"\x80"  # torch.save's pre-1.6 format is a bare pickle
    if not legacy and not zipfile.is_zipfile(file):
        raise ConfigError(f"{option} {path}: not a PyTorch checkpoint, or truncated (no zip directory at its end)")
    AtomicCheckpointIO().load_checkpoint(file, map_location="cpu", mmap=not legacy)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


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
        if not checkpoint_skips_saving(self, trainer):
            save_last_checkpoint(self, trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # ModelCheckpoint saves here only if no last.ckpt was written yet; the periodic one may be stale.
        if not checkpoint_skips_saving(self, trainer):
            save_last_checkpoint(self, trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # ModelCheckpoint would also write an "epoch=..-step=.." copy; the fresh last.ckpt is all a resume needs.
        if checkpoint_saves_on_exception(self, trainer):
            save_last_checkpoint(self, trainer)
