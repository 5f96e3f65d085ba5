"""Uses of other libraries' private names, in one place, each with the versions it was checked against.

When an upgrade moves one of these, the test of this module (``tests/test_compat.py``) fails and names it.
"""

from __future__ import annotations

import csv
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "aspp_decoder", "attached_trainer", "batches_processed", "checkpoint_saves_on_exception",
    "checkpoint_skips_saving", "ddp_ignore_buffers", "drop_wandb_anonymous", "foreach_copy_",
    "given_hyperparameters", "has_option", "keep_csv_metrics", "logged_step", "logs_this_step", "save_last_checkpoint",
    "timm_checkpoint_filter",
]


def given_hyperparameters() -> dict[str, Any] | None:
    """The config LightningCLI is instantiating the model from, or ``None`` outside the CLI.

    Lightning's ``hparams_mixin._given_hyperparameters`` context variable, set by ``LightningCLI`` around the
    model's constructor (``save_hyperparameters`` then saves the config, ``class_path`` dicts included). Checked
    with lightning 2.5.3 and 2.6.6.
    """
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get()


def attached_trainer(module: Any) -> Any | None:
    """The trainer ``module`` (a ``LightningModule``) is attached to, or ``None``.

    ``LightningModule._trainer``: the public ``trainer`` property raises when there is none. Checked with lightning
    2.5.3 and 2.6.6.
    """
    return module._trainer


def checkpoint_skips_saving(callback: Any, trainer: Any) -> bool:
    """Whether a ``ModelCheckpoint`` saves nothing now (``fast_dev_run``, sanity check, not global zero...).

    ``ModelCheckpoint._should_skip_saving_checkpoint``; checked with lightning 2.5.3 and 2.6.6.
    """
    return bool(callback._should_skip_saving_checkpoint(trainer))


def checkpoint_saves_on_exception(callback: Any, trainer: Any) -> bool:
    """Whether a ``ModelCheckpoint`` built with ``save_on_exception=True`` saves after the current exception.

    ``ModelCheckpoint._should_save_on_exception``; checked with lightning 2.5.3 and 2.6.6.
    """
    return bool(callback._should_save_on_exception(trainer))


def save_last_checkpoint(callback: Any, trainer: Any) -> None:
    """Write the ``last.ckpt`` of a ``ModelCheckpoint`` (``save_last=True``) now.

    ``ModelCheckpoint._save_last_checkpoint`` with ``ModelCheckpoint._monitor_candidates``; checked with lightning
    2.5.3 and 2.6.6.
    """
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def keep_csv_metrics(logger: Any) -> None:
    """Open a ``CSVLogger``'s writer on a folder whose ``metrics.csv`` it appends to instead of deleting it.

    Lightning's writer (``fabric.loggers.csv_logs._ExperimentWriter``) removes an existing ``metrics.csv`` when
    it is created and keeps the file's columns in ``metrics_keys``; this restores the file's rows and columns
    after creating it. Nothing happens when the folder has no ``metrics.csv``. Checked with lightning 2.5.3 and
    2.6.6.

    Args:
        logger: a ``lightning.pytorch.loggers.CSVLogger`` whose writer has not been used yet.
    """
    metrics = Path(logger.log_dir) / "metrics.csv"
    if not metrics.is_file():
        return
    text = metrics.read_text()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment
    metrics.write_text(text)
    writer.metrics_keys = next(csv.reader(text.splitlines()[:1]), [])


def batches_processed(trainer: Any) -> int:
    """Training batches of the current epoch whose optimisation step has run (the count a resume restores).

    ``trainer.fit_loop.epoch_loop.batch_progress.current.processed``, of Lightning's internal
    ``_TrainingEpochLoop`` and ``_BatchProgress``. Checked with lightning 2.5.3 and 2.6.6.
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def drop_wandb_anonymous(logger: Any) -> None:
    """Remove the ``anonymous`` key Lightning's ``WandbLogger`` always passes to ``wandb.init``.

    wandb (0.19 and later) warns "The anonymous setting has no effect and will be removed" whenever the key is
    present, even as ``None``, so every W&B run printed it. Checked with lightning 2.6.6 (``WandbLogger._wandb_init``)
    and wandb 0.31.0. Call before the logger's ``experiment`` is first used.

    Args:
        logger: a ``lightning.pytorch.loggers.WandbLogger`` (other loggers are left alone).
    """
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)


def logs_this_step(trainer: Any) -> bool:
    """Whether the trainer writes the values logged in this training batch (``log_every_n_steps``).

    Lightning's ``_LoggerConnector.should_update_logs``, valid from ``on_train_batch_start`` to
    ``on_train_batch_end``; a value logged with ``on_step=True`` in another batch is dropped. Checked with lightning
    2.5.3 and 2.6.6.
    """
    return bool(trainer._logger_connector.should_update_logs)


def logged_step(trainer: Any) -> int:
    """The step under which Lightning logs the values of the current training batch (in ``on_train_batch_end``).

    Lightning's ``fit_loop.epoch_loop._batches_that_stepped``, which it passes to ``Logger.log_metrics`` for training
    steps. Checked with lightning 2.5.3 and 2.6.6.
    """
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def ddp_ignore_buffers(module: Any, names: list[str]) -> None:
    """Have ``DistributedDataParallel`` leave the buffers ``names`` of ``module`` alone (no broadcast from process 0
    before every forward pass). Call before the module is wrapped.

    For buffers every process keeps identical itself, such as the contrastive memories (all-gathered updates), whose
    broadcast would copy hundreds of MB per step. torch's ``DistributedDataParallel._set_params_and_buffers_to_ignore
    _for_model`` (sets ``module._ddp_params_and_buffers_to_ignore``, read when DDP wraps the module); checked with
    torch 2.2 and 2.14.1. Names already set there are kept.
    """
    from torch.nn.parallel import DistributedDataParallel

    known = list(getattr(module, "_ddp_params_and_buffers_to_ignore", []))
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, known + [n for n in names
                                                                                      if n not in known])


def foreach_copy_(dst: list[Tensor], src: list[Tensor]) -> None:
    """Copy every tensor of ``src`` into the tensor of ``dst`` at the same position, in one fused launch.

    torch's ``_foreach_copy_`` (``Tensor.copy_`` per pair is the public equivalent, one launch per tensor);
    checked with torch 2.14.1, and the CI's lower-bound job runs it on torch 2.2.
    """
    torch._foreach_copy_(dst, src)


def aspp_decoder(in_channels: int, channels: int, atrous_rates: Sequence[int], dropout: float) -> nn.Module:
    """smp's DeepLabV3 decoder: ASPP (1x1, dilated 3x3 per rate, image pooling), then 3x3 conv-BN-ReLU.

    ``segmentation_models_pytorch.decoders.deeplabv3.decoder.DeepLabV3Decoder``, which smp does not export; it
    takes the list of encoder features and reads the last. Its parameter names (``aspp``, ``conv``, ``bn``) are
    in every DeepLabv3 checkpoint. Checked with segmentation-models-pytorch 0.5.0 and 0.6.0; 0.4 and earlier
    build it as an ``nn.Sequential`` with other arguments, another forward and other parameter names.
    """
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3Decoder

    return DeepLabV3Decoder(in_channels, channels, tuple(atrous_rates), aspp_separable=False, aspp_dropout=dropout)


def timm_checkpoint_filter(timm_name: str) -> Callable[[dict, nn.Module], dict] | None:
    """timm's filter of original checkpoints for the family of ``timm_name`` (``None`` when it has none).

    timm's convention, not an API: a family's ``_create_*`` passes its module's ``checkpoint_filter_fn`` to
    ``build_model_with_cfg`` (Swin: original layout, relative-position tables for another window size). Checked
    with timm 1.0.31.
    """
    from timm.models import model_entrypoint

    return getattr(sys.modules[model_entrypoint(timm_name).__module__], "checkpoint_filter_fn", None)


def has_option(parser: Any, option: str) -> bool:
    """Whether an argument parser accepts the option string ``option`` (``"--model.optimizer.help"``).

    argparse's ``ArgumentParser._option_string_actions`` (argparse has no public query; jsonargparse reads it too).
    Checked with Python 3.11 and jsonargparse 4.53; jsonargparse 4.30 adds the same ``--KEY.help`` options.
    """
    return option in parser._option_string_actions
