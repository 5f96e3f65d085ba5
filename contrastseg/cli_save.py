"""Where the ``contrastseg`` command keeps a run's resolved config: ``config.yaml`` in the run folder, inside every
checkpoint, and in the W&B run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback

from contrastseg.errors import ConfigError
from contrastseg.resume import CONFIG_KEY, logger_init_args, reopen_logger
from contrastseg.runs import config_differences, run_folder, version_folder

__all__ = ["LoggerSaveConfigCallback", "numbered"]


def numbered(logger: object) -> bool:
    """Whether a logger numbers its runs ``version_N`` by listing folders (and so needs a claimed folder)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return isinstance(logger, (CSVLogger, TensorBoardLogger))


def _adopt_rank_zero_version(trainer: Trainer, config: Namespace, claimed: Path | None) -> None:
    """Every process logs under the version process 0 claimed (ranks > 0 did not claim one); a process that
    claimed another folder (a second node's main process) removes it while it is still empty."""
    if trainer.world_size < 2 or not trainer.loggers or not numbered(trainer.loggers[0]):
        return
    logger = trainer.loggers[0]
    version = trainer.strategy.broadcast(logger.version)
    if claimed is not None and claimed.name != version_folder(version):
        with contextlib.suppress(OSError):
            claimed.rmdir()
    init_args = logger_init_args(config)
    if version != logger.version and init_args is not None:
        reopen_logger(trainer, init_args, version)


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder beside ``checkpoints/``, stores the same resolved config in every
    checkpoint (what ``--ckpt_path last`` compares) and logs it to W&B.

    Lightning saves it in ``trainer.log_dir``, which for W&B is the ``save_dir`` every run shares, so Lightning's
    own saving is off (``save_to_log_dir=False``) and :meth:`save_config` writes it. Another run's ``config.yaml``
    is never replaced: a run folder that holds one with a different config (a pinned ``version``) is an error.
    """

    claimed: Path | None = None  # the version folder this process created for a new run (ContrastSegCLI)

    def __init__(self, parser: LightningArgumentParser, config: Namespace, **kwargs: Any) -> None:
        super().__init__(parser, config, **{**kwargs, "save_to_log_dir": False})
        self._folder: Path | None = None
        self._resolved: dict[str, Any] | None = None

    def resolved(self) -> dict[str, Any]:
        """The run's resolved config as plain YAML types."""
        if self._resolved is None:
            self._resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        return self._resolved

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved:  # collective steps; Lightning's setup then calls save_config on process 0
            _adopt_rank_zero_version(trainer, self.config, self.claimed)
            self._folder = Path(run_folder(trainer))  # broadcast from process 0
            problem = self._conflict() if trainer.is_global_zero else None
            problem = trainer.strategy.broadcast(problem)
            if problem:
                raise ConfigError(problem)
        super().setup(trainer, pl_module, stage)

    def _conflict(self) -> str | None:
        """Why this run may not write its ``config.yaml`` into its folder (``None`` when it may)."""
        path = self._folder / self.config_filename
        if not path.is_file():
            return None
        differences = config_differences(yaml.safe_load(path.read_text()) or {}, self.resolved())
        if not differences:
            return None
        return (f"run folder {self._folder} already holds the config.yaml of another run (it differs in "
                f"{'; '.join(differences[:3])}): remove trainer.logger.init_args.version to start a new run folder, "
                "or resume that run with its own config")

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        path = self._folder / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed: never half a config
        self.parser.save(self.config, str(tmp), skip_none=False, overwrite=True, multifile=self.multifile)
        os.replace(tmp, path)
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(self.resolved(), allow_val_change=True)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.resolved()  # plain types: loads with weights_only=True
