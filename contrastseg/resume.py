"""``--ckpt_path last`` for the CLI: the newest ``last.ckpt`` of the run name trained with the same config, and
logging that continues in its folder.

Lightning resolves ``"last"`` only in the checkpoint folder of the *new* logger version, which is empty, so a
requeued or restarted run would start from scratch; these helpers look under ``<save_dir>/<name>/*/checkpoints``
and take the newest checkpoint whose run has this run's resolved config (see :mod:`contrastseg.runs`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from contrastseg._compat import keep_csv_metrics
from contrastseg.errors import ConfigError
from contrastseg.evaluation.collect import saved_logger_name
from contrastseg.runs import BOOKKEEPING, config_differences, last_checkpoints, runs_folder, version_folder

# Where LoggerSaveConfigCallback stores the run's resolved config inside every checkpoint.
CONFIG_KEY = "contrastseg_config"

__all__ = ["CONFIG_KEY", "logger_init_args", "reopen_logger", "resolve_last"]


def logger_init_args(config: Namespace) -> Namespace | None:
    """``init_args`` of the first logger in a parsed config (``None`` for ``logger: true/false``).

    Args:
        config: the subcommand's parsed config (``trainer.logger`` a logger, a list of them, or a bool).

    Returns:
        The logger's ``init_args`` namespace, or ``None``.
    """
    logger = config.get("trainer.logger")
    logger = (logger or [None])[0] if isinstance(logger, list) else logger
    return logger.get("init_args") if isinstance(logger, Namespace) and logger.get("class_path") else None


def _saved_logger_name(folder: Path) -> object:
    """``trainer.logger.init_args.name`` in the ``config.yaml`` of a run folder (``None`` if unknown)."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return saved_logger_name(config) if isinstance(config, dict) else None


def _run_config(checkpoint: Path) -> dict[str, Any] | None:
    """The resolved config a checkpoint was trained with: stored in it (:data:`CONFIG_KEY`), else the
    ``config.yaml`` of its run folder; ``None`` when neither can be read."""
    try:  # mmap: only the pickled structure is read, not the tensors
        stored = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get(CONFIG_KEY)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported when it is loaded, if it is chosen
        stored = None
    if isinstance(stored, dict):
        return stored
    try:
        config = yaml.safe_load((checkpoint.parent.parent / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def resolve_last(trainer: Trainer, init_args: Namespace | None, *, required: bool,
                 config: dict[str, Any] | None = None, ignore: Sequence[str] = BOOKKEEPING,
                 only: Sequence[str] | None = None) -> str | None:
    """The newest ``last.ckpt`` of this run name whose run was trained with this config, for ``--ckpt_path last``.

    A checkpoint is only resumed when its run's resolved config equals ``config`` (the seed included) apart from
    the ``ignore`` keys: a seed sweep whose jobs all pass ``--ckpt_path last`` gives one run per seed. For ``fit``
    the first logger is re-created with the version of the run resumed, so that its checkpoints, metrics and
    ``config.yaml`` continue in the same folder (and a requeued SLURM job resumes the newest state again);
    ``validate`` and ``test`` (``required``) log into a new version folder, as Lightning does, and raise a
    :class:`ConfigError` when there is no checkpoint; ``fit`` then prints why and starts a new run (``None``).

    Args:
        trainer: the instantiated trainer (its first logger and checkpoint callbacks say where to look).
        init_args: the first logger's ``init_args`` from the config (:func:`logger_init_args`): a pinned
            ``version``/``id`` restricts the search to that run; ``name`` filters W&B runs sharing a project.
        required: ``validate``/``test``: a missing checkpoint is an error, and the logger is not reopened.
        config: this run's resolved config (parsed YAML); ``None`` accepts any run (no comparison).
        ignore: keys that may differ (see :func:`~contrastseg.runs.config_differences`).
        only: if given, only these keys must agree.

    Returns:
        The checkpoint path, or ``None`` for a ``fit`` that starts anew.
    """
    folders = [cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    runs = runs_folder(trainer)
    if runs is None:
        where = Path(trainer.default_root_dir) / "checkpoints"
        folders.append(where)
    else:
        where = runs / "*" / "checkpoints"
    pinned = None if init_args is None else init_args.get("version")
    pinned = init_args.get("id") if pinned is None and init_args is not None else pinned  # W&B: id or version
    if runs is not None and pinned is not None:  # a version given in the config: only that folder
        where = runs / version_folder(pinned) / "checkpoints"
        folders.append(where)
        runs = None
    name = None if init_args is None else init_args.get("name")  # W&B: the run name; its folders hold the project
    candidates = last_checkpoints(runs, folders=folders, accept=lambda run: _saved_logger_name(run) in (None, name))
    found, rejected = None, []
    for candidate in candidates:  # newest first
        saved = None if config is None else _run_config(candidate)
        if config is None:
            differences = []
        elif saved is None:
            differences = ["no config.yaml to compare"]
        else:
            differences = config_differences(saved, config, ignore=ignore, only=only)
        if not differences:
            found = candidate
            break
        rejected.append((candidate, differences))
    say = (lambda text: print(f"contrastseg: --ckpt_path last: {text}", file=sys.stderr)) if rank_zero_only.rank == 0 \
        else (lambda text: None)
    for candidate, differences in rejected[:1]:  # the newest one that was not taken, and why
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        say(f"not {'loading' if required else 'resuming'} {candidate}: its run's config differs "
            f"({'; '.join(differences[:3])}{more})")
    if found is None:
        if required:
            raise ConfigError(f"--ckpt_path last: no last.ckpt of a run with this config in {where}"
                              + (f" ({len(rejected)} of other runs)" if rejected else ""))
        say(f"no last.ckpt {'of a run with this config ' if rejected else ''}in {where}; starting a new run")
        return None
    say(f"{'loading' if required else 'resuming'} {found}")
    if not required and runs is not None and init_args is not None and found.parent.parent.parent == runs:
        reopen_logger(trainer, init_args, found.parent.parent.name)
    return str(found)


def reopen_logger(trainer: Trainer, init_args: Namespace, version: str | int) -> None:
    """Replace the first logger by the same logger writing into the ``version`` folder (kept metrics appended).

    Args:
        trainer: the trainer whose first logger is replaced.
        init_args: that logger's ``init_args`` from the config.
        version: the version (``3`` or ``"version_3"``; a W&B run id).
    """
    logger = type(trainer.loggers[0])(**{**init_args.as_dict(), "version": version})  # W&B: version is the run id
    trainer.loggers = [logger, *trainer.loggers[1:]]
    if rank_zero_only.rank == 0 and isinstance(logger, CSVLogger):
        keep_csv_metrics(logger)  # the kept metrics.csv is appended to, not replaced
