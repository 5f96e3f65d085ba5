"""Run folders: where a run keeps its checkpoints and metric files, what makes two runs the same run, and claiming
a new run's folder so that no two runs share one.

``--ckpt_path last`` may only continue a run trained with the same resolved config (seed included): a seed sweep
whose every job passes ``--ckpt_path last`` (``experiments/slurm.sh``) must give one run per seed, not one run
continued by every seed. :func:`config_differences` compares two resolved configs while ignoring the keys that
only say how a run is started, logged or fed (:data:`BOOKKEEPING`).

A logger that numbers its runs (CSV, TensorBoard) picks ``version_N`` by listing folders, so two runs started at
the same moment picked the same one, and a checkpoint ended up beside another run's ``config.yaml``.
:func:`claim_version` creates the folder with ``mkdir`` (atomic: exactly one process succeeds) and takes the next
number when it exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

__all__ = [
    "BOOKKEEPING", "EVALUATION_BOOKKEEPING", "EVALUATION_KEYS", "claim_version", "config_differences",
    "find_last_checkpoint", "last_checkpoints", "launch_rank_zero", "run_folder", "runs_folder", "version_folder",
]

# Keys that do not change what a run trains: how it is started, logged, shown, checkpointed and how fast data is
# read. A key matches itself and everything below it.
BOOKKEEPING = (
    "ckpt_path", "weights_only", "trainer.logger", "trainer.callbacks", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.enable_checkpointing", "trainer.log_every_n_steps",
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.min_epochs", "trainer.min_steps",
    "trainer.num_sanity_val_steps", "trainer.profiler", "trainer.default_root_dir", "trainer.barebones",
    "data.init_args.num_workers", "data.init_args.pin_memory", "data.init_args.persistent_workers",
    "data.init_args.val_batch_size",
)
# validate / test / predict: the training run must match (seed, model, data), not how it is evaluated: every other
# top-level key (the trainer, the subcommand's own arguments) and these do not count.
EVALUATION_KEYS = ("seed_everything", "model", "data")
EVALUATION_BOOKKEEPING = (*BOOKKEEPING, "model.evaluation", "data.init_args.batch_size", "data.init_args.num_val",
                          "data.init_args.num_test", "data.init_args.val_split", "data.init_args.test_split")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0.c": value}`` for every leaf of nested mappings and lists."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and tree and any(isinstance(v, (dict, list)) for v in tree):
        return {k: v for i, value in enumerate(tree) for k, v in _flatten(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any], *, ignore: Iterable[str] = BOOKKEEPING,
                       only: Iterable[str] | None = None) -> list[str]:
    """The keys in which two resolved configs differ, as ``key: saved -> current``, bookkeeping keys aside.

    Args:
        saved: a run's ``config.yaml``, parsed.
        current: the resolved config of the run being started, parsed from the same YAML dump.
        ignore: keys (and everything below them) that do not count.
        only: if given, only these keys (and everything below them) count.

    Returns:
        One line per differing key, sorted; empty when the configs describe the same run.
    """
    ignored, kept = tuple(ignore), None if only is None else tuple(only)

    def under(key: str, keys: tuple[str, ...]) -> bool:
        return any(key == k or key.startswith(f"{k}.") for k in keys)

    def counts(key: str) -> bool:
        return not under(key, ignored) and (kept is None or under(key, kept))

    a, b = _flatten(saved), _flatten(current)
    absent = "<absent>"
    return [f"{key}: {a.get(key, absent)} -> {b.get(key, absent)}" for key in sorted(a.keys() | b.keys())
            if counts(key) and a.get(key, absent) != b.get(key, absent)]


def launch_rank_zero() -> bool:
    """Whether this process is global rank 0, read from the launcher's environment before any process group.

    DDP's subprocess launcher starts ranks > 0 with ``LOCAL_RANK`` set; torchrun and SLURM set ``RANK`` /
    ``SLURM_PROCID``; a second node's main process has ``NODE_RANK`` > 0.
    """
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0" and \
        os.environ.get("GROUP_RANK", "0") == "0"


def claim_version(runs: Path) -> int:
    """Create ``runs/version_N`` for the smallest free ``N`` above every existing version, atomically.

    ``mkdir`` fails for every process but one when several create the same folder, so two runs started together
    get two folders; the loser takes the next number.

    Args:
        runs: the run name's folder (``<save_dir>/<name>``), created if missing.

    Returns:
        ``N``; the folder exists and is empty.
    """
    runs.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in runs.glob("version_*") if p.name[8:].isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (runs / f"version_{n}").mkdir()
            return n
        except FileExistsError:
            n += 1


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


def last_checkpoints(runs: str | Path | None, *, folders: Iterable[str | Path] = (),
                     accept: Callable[[Path], bool] | None = None) -> list[Path]:
    """Every ``last*.ckpt`` of a run name, newest first.

    Args:
        runs: the run name's folder (``<save_dir>/<name>``): every ``<runs>/*/checkpoints/`` is searched.
        folders: further checkpoint folders (a checkpoint callback's explicit ``dirpath``).
        accept: optional ``run folder -> bool`` that rejects version folders of another run (W&B projects hold
            the folders of every run in the project).

    Returns:
        The existing checkpoints by modification time, newest first.
    """
    found = Path(runs).glob("*/checkpoints/last*.ckpt") if runs is not None else ()
    candidates = [p for p in found if accept is None or accept(p.parent.parent)]
    candidates += [p for folder in folders for p in Path(folder).glob("last*.ckpt")]
    candidates = list(dict.fromkeys(p for p in candidates if p.is_file()))
    return sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True)


def find_last_checkpoint(runs: str | Path | None, *, folders: Iterable[str | Path] = (),
                         accept: Callable[[Path], bool] | None = None) -> Path | None:
    """The most recently written ``last*.ckpt`` of a run name, or ``None`` (see :func:`last_checkpoints`)."""
    candidates = last_checkpoints(runs, folders=folders, accept=accept)
    return candidates[0] if candidates else None
