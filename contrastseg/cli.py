"""The ``contrastseg`` command: LightningCLI with dataset facts linked into the model and one-line errors.

Configs are YAML files merged in the order given (``--config a.yaml --config b.yaml``); a config may start with
``extends: <file or list of files>`` to be applied on top of those, and a config or ``--key=Class`` that names
another class starts that class from its own defaults (:mod:`contrastseg.cli_config`). ``--contrast.<option>``
sets one option of the contrastive loss term (:mod:`contrastseg.cli_parser`). The commands beside Lightning's are
listed in :mod:`contrastseg.commands`.

``fit --ckpt_path last`` resumes the newest ``last.ckpt`` of the run name (``<save_dir>/<name>/*/checkpoints``, not
only the new version folder Lightning would look in) whose run has the same resolved config, and keeps logging
into that run's version folder; any other run gets a version folder of its own, claimed atomically. Checkpoints
load with ``weights_only=True``.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
from jsonargparse import Namespace
from lightning import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from contrastseg._compat import drop_wandb_anonymous
from contrastseg.callbacks.checkpoint import check_checkpoint
from contrastseg.callbacks.progress import LineProgress
from contrastseg.cli_config import ConfigFile
from contrastseg.cli_help import DESCRIPTION, EPILOG, ContrastSegTrainer, ShortHelpFormatter
from contrastseg.cli_parser import ContrastSegParser, add_term_options
from contrastseg.cli_save import LoggerSaveConfigCallback, numbered
from contrastseg.commands import run_command
from contrastseg.data.base import SegmentationDataModule
from contrastseg.errors import ContrastSegError
from contrastseg.losses import CrossEntropy, MultiScaleContrast
from contrastseg.module import ContrastSegModule
from contrastseg.quiet import quiet_third_party
from contrastseg.resume import logger_init_args, reopen_logger, resolve_last
from contrastseg.runs import (
    BOOKKEEPING,
    EVALUATION_BOOKKEEPING,
    EVALUATION_KEYS,
    claim_version,
    launch_rank_zero,
    runs_folder,
    version_folder,
)

__all__ = ["ContrastSegCLI", "main", "run"]

# `--contrast.<option>` and `--ce.<option>`: the loss terms the command-line shorthand addresses.
TERM_SHORTHANDS = {"contrast": MultiScaleContrast, "ce": CrossEntropy}


def _sync_batchnorm_off(config: Namespace) -> str | None:
    """Turn ``trainer.sync_batchnorm`` off where it cannot work or does nothing; the notice, or ``None``.

    PyTorch's SyncBatchNorm runs on GPUs only (DDP on the CPU fails at the first step) and with one process it is
    plain BatchNorm, so the paper configs run unchanged on one GPU or a CPU.
    """
    trainer = config.get("trainer")
    if trainer is None or not trainer.get("sync_batchnorm"):
        return None
    accelerator = str(trainer.get("accelerator") or "auto")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "cpu" or (accelerator == "auto" and gpus == 0):
        why = "it needs GPUs and this run is on the CPU"
    else:
        devices, nodes = trainer.get("devices"), int(trainer.get("num_nodes") or 1)
        if isinstance(devices, (list, tuple)):
            count = len(devices)
        elif str(devices).strip() in ("auto", "-1"):
            count = gpus
        elif isinstance(devices, str) and "," in devices:
            count = len([d for d in devices.split(",") if d.strip()])
        else:
            try:
                count = int(devices)
            except (TypeError, ValueError):
                return None
        if count * nodes != 1:
            return None
        why = "with one process it is plain BatchNorm"
    trainer["sync_batchnorm"] = False
    return f"trainer.sync_batchnorm turned off: {why}"


def _quiet_loggers(trainer: Trainer) -> None:
    """W&B: no notice about a setting this run never made; its folder exists before wandb looks for a git root."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            drop_wandb_anonymous(logger)
            if logger.save_dir:
                Path(logger.save_dir).mkdir(parents=True, exist_ok=True)


def _line_progress_for_files(trainer: Trainer, config: Namespace) -> None:
    """Lightning's progress bar, when the output is not a terminal (a SLURM log), becomes a line every
    ``log_every_n_steps`` batches (:class:`~contrastseg.callbacks.LineProgress`); a bar the config names stays."""
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

    bar = trainer.progress_bar_callback
    configured = [c for c in (config.get("trainer.callbacks") or []) if isinstance(c, Namespace)
                  and str(c.get("class_path", "")).rsplit(".", 1)[-1].endswith(("ProgressBar", "Progress"))]
    if bar is None or configured or type(bar) not in (RichProgressBar, TQDMProgressBar) or sys.stdout.isatty():
        return
    trainer.callbacks[trainer.callbacks.index(bar)] = LineProgress()
    assert isinstance(trainer.progress_bar_callback, ProgressBar)


class ContrastSegCLI(LightningCLI):
    """LightningCLI whose model receives ``num_classes``, ``ignore_index`` and ``class_names`` from the data, whose
    ``--ckpt_path last`` resumes the newest ``last.ckpt`` of a run with the same config (see
    :func:`~contrastseg.resume.resolve_last`), and whose every run gets a folder of its own."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # LightningCLI's parser, with the --config action that follows `extends` (jsonargparse's, per file).
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.__version__}"])
        parser = ContrastSegParser(**kwargs)
        parser.add_argument("-c", "--config", action=ConfigFile,
                            help="Path to a configuration file in json or yaml format.")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in ("num_classes", "ignore_index", "class_names", "class_groups", "palette"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
        add_term_options(parser, TERM_SHORTHANDS)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:  # Lightning's CLI loads the checkpoint next, to read its hyperparameters
            ckpt_path = self.config[subcommand].get("ckpt_path")
            if isinstance(ckpt_path, (str, Path)) and str(ckpt_path) not in ("last", "hpc", "registry") and \
                    "://" not in str(ckpt_path) and not str(ckpt_path).startswith("registry:"):
                check_checkpoint(ckpt_path, option="--ckpt_path")

    def before_instantiate_classes(self) -> None:
        notice = _sync_batchnorm_off(self.config.get(str(self.subcommand), self.config))
        if notice and launch_rank_zero():
            print(f"contrastseg: {notice}", file=sys.stderr)

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None and "weights_only" in config:
            config["weights_only"] = True  # a checkpoint must not run code (Lightning unpickles URLs fully)
        saver = next((cb for cb in self.trainer.callbacks if isinstance(cb, LoggerSaveConfigCallback)), None)
        resolved = saver.resolved() if saver is not None else None
        init_args = logger_init_args(self.config[self.subcommand])
        logger = self.trainer.loggers[0] if self.trainer.loggers else None
        if config.get("ckpt_path") == "last":
            # Lightning looks for "last" only in the checkpoint folder of the new logger version, which is empty.
            evaluating = self.subcommand != "fit"
            config["ckpt_path"] = resolve_last(self.trainer, init_args, required=evaluating, config=resolved,
                                               ignore=EVALUATION_BOOKKEEPING if evaluating else BOOKKEEPING,
                                               only=EVALUATION_KEYS if evaluating else None)
        _quiet_loggers(self.trainer)
        _line_progress_for_files(self.trainer, self.config[self.subcommand])
        reopened = logger is not None and self.trainer.loggers[0] is not logger  # resuming in the run's folder
        if (numbered(logger) and not reopened and init_args is not None and init_args.get("version") is None
                and launch_rank_zero()):
            version = claim_version(runs_folder(self.trainer))  # atomic: two runs started together get two
            reopen_logger(self.trainer, init_args, version)
            if saver is not None:
                saver.claimed = runs_folder(self.trainer) / version_folder(version)

    before_validate = before_test = before_predict = before_fit


def _one_line(err: BaseException) -> str:
    # Errors raised in a DataLoader worker arrive with the worker's traceback in the message: keep the last line.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return text.removeprefix(prefix)


def _find_user_error(err: BaseException) -> ContrastSegError | None:
    """The :class:`ContrastSegError` in ``err``'s cause chain (jsonargparse wraps constructor errors)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ContrastSegError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return None


def main(args: Sequence[str] | None = None) -> ContrastSegCLI:
    """Entry point of the ``contrastseg`` console script: Lightning's ``fit``, ``validate``, ``test`` and ``predict``,
    and the commands of :data:`contrastseg.commands.COMMANDS`.

    Returns the finished :class:`ContrastSegCLI` (its ``trainer``, ``model`` and ``datamodule``) when called
    from Python; user-input errors exit with status 2 and a one-line message.
    """
    argv = list(sys.argv[1:] if args is None else args)
    quiet_third_party()
    status = run_command(argv)  # check-data, collect, compare, predict-folder
    if status is not None:
        raise SystemExit(status)
    try:
        return ContrastSegCLI(
            ContrastSegModule, SegmentationDataModule, subclass_mode_data=True, args=args,
            save_config_callback=LoggerSaveConfigCallback, auto_configure_optimizers=False,
            trainer_class=ContrastSegTrainer,
            parser_kwargs={"prog": "contrastseg", "description": DESCRIPTION, "epilog": EPILOG,
                           "formatter_class": ShortHelpFormatter,
                           **{cmd: {"formatter_class": ShortHelpFormatter,
                                    "usage": f"contrastseg {cmd} [-c CONFIG ...] [--KEY VALUE ...]"}
                              for cmd in ContrastSegCLI.subcommands()}},
        )
    except SIGTERMException:  # Lightning finished the batch and LastCheckpoint saved; a pre-empted job, not a success
        print("contrastseg: stopped by SIGTERM; last.ckpt was saved: continue with --ckpt_path last", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as err:
        user_error = _find_user_error(err)
        if user_error is None:
            raise
        print(f"contrastseg: error: {_one_line(user_error)}", file=sys.stderr)
        raise SystemExit(2) from None


def run() -> None:
    """The console script: :func:`main` without a return value (a returned object would become the exit code)."""
    main()


if __name__ == "__main__":
    run()
