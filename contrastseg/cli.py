"""The ``contrastseg`` command: LightningCLI with dataset facts linked into the model and one-line errors.

Configs are YAML files merged in the order given (``--config a.yaml --config b.yaml``). A config may start with
``extends: <file or list of files>`` (paths relative to it) to be applied on top of those, so experiment files are
short diffs over ``experiments/_defaults.yaml``.

``fit --ckpt_path last`` resumes the newest ``last.ckpt`` of the run name (``<save_dir>/<name>/*/checkpoints``, not
only the new version folder Lightning would look in) whose run has the same resolved config, and keeps logging
into that run's version folder; any other run gets a version folder of its own, claimed atomically. Checkpoints
load with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from contrastseg._compat import drop_wandb_anonymous
from contrastseg.callbacks.checkpoint import check_checkpoint
from contrastseg.callbacks.progress import LineProgress
from contrastseg.cli_help import DESCRIPTION, EPILOG, ContrastSegTrainer, ShortHelpFormatter
from contrastseg.data.base import SegmentationDataModule
from contrastseg.errors import ConfigError, ContrastSegError
from contrastseg.module import ContrastSegModule
from contrastseg.quiet import quiet_third_party
from contrastseg.resume import CONFIG_KEY, logger_init_args, reopen_logger, resolve_last
from contrastseg.runs import (
    BOOKKEEPING,
    EVALUATION_BOOKKEEPING,
    EVALUATION_KEYS,
    claim_version,
    config_differences,
    launch_rank_zero,
    run_folder,
    runs_folder,
    version_folder,
)

__all__ = ["ContrastSegCLI", "expand_configs", "main"]

_SUBCOMMANDS = ("fit", "validate", "test", "predict")


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder beside ``checkpoints/``, stores the same resolved config in every
    checkpoint (what ``--ckpt_path last`` compares) and logs it to W&B.

    Lightning saves it in ``trainer.log_dir``, which for W&B is the ``save_dir`` every run shares. Another run's
    ``config.yaml`` is never replaced: a run folder that holds one with a different config (a pinned
    ``version``) is an error.
    """

    claimed: Path | None = None  # the version folder this process created for a new run (ContrastSegCLI)

    def resolved(self) -> dict[str, Any]:
        """The run's resolved config as plain YAML types."""
        if getattr(self, "_resolved", None) is None:
            self._resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        return self._resolved

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        _adopt_rank_zero_version(trainer, self.config, self.claimed)
        if self.save_to_log_dir:
            folder = run_folder(trainer)  # broadcast from rank 0
            path = Path(folder) / self.config_filename
            problem = None
            if trainer.is_global_zero and path.is_file():
                saved = yaml.safe_load(path.read_text()) or {}
                differences = config_differences(saved, self.resolved())
                if differences:
                    problem = (f"run folder {folder} already holds the config.yaml of another run (it differs in "
                               f"{'; '.join(differences[:3])}): remove trainer.logger.init_args.version to start "
                               "a new run folder, or resume that run with its own config")
            problem = trainer.strategy.broadcast(problem)
            if problem:
                raise ConfigError(problem)
            if trainer.is_global_zero:  # written whole, then renamed: a reader never sees half a config
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                self.parser.save(self.config, str(tmp), skip_none=False, overwrite=True, multifile=self.multifile)
                os.replace(tmp, path)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.resolved()  # plain types: loads with weights_only=True

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if loggers:
            for logger in loggers:
                logger.experiment.config.update(self.resolved(), allow_val_change=True)


def _numbered(logger: object) -> bool:
    """Whether a logger numbers its runs ``version_N`` by listing folders (and so needs a claimed folder)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return isinstance(logger, (CSVLogger, TensorBoardLogger))


def _adopt_rank_zero_version(trainer: Trainer, config: Namespace, claimed: Path | None) -> None:
    """Every process logs under the version process 0 claimed (ranks > 0 did not claim one); a process that
    claimed another folder (a second node's main process) removes it while it is still empty."""
    if trainer.world_size < 2 or not trainer.loggers or not _numbered(trainer.loggers[0]):
        return
    logger = trainer.loggers[0]
    version = trainer.strategy.broadcast(logger.version)
    if claimed is not None and claimed.name != version_folder(version):
        with contextlib.suppress(OSError):
            claimed.rmdir()
    init_args = logger_init_args(config)
    if version != logger.version and init_args is not None:
        reopen_logger(trainer, init_args, version)


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

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in ("num_classes", "ignore_index", "class_names", "class_groups", "palette"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

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
        if (_numbered(logger) and not reopened and init_args is not None and init_args.get("version") is None
                and launch_rank_zero()):
            version = claim_version(runs_folder(self.trainer))  # atomic: two runs started together get two
            reopen_logger(self.trainer, init_args, version)
            if saver is not None:
                saver.claimed = runs_folder(self.trainer) / version_folder(version)

    before_validate = before_test = before_predict = before_fit


def _yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """PyYAML's multi-line error (source excerpt and caret lines) as one line: ``file:line:col: problem``.

    The location is where the construct that failed starts (e.g. an unclosed ``[``) when PyYAML names one, else
    where the problem was found; lines and columns count from 1 as in editors.
    """
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f"{shown}: invalid YAML: {' '.join(ln.strip() for ln in str(err).splitlines() if ln.strip())}"
    problem, context, mark = err.problem or "invalid YAML", err.context, err.problem_mark
    if context and err.context_mark is not None:
        at = err.context_mark
        text = f"{context}: {problem} at line {mark.line + 1}, column {mark.column + 1}"
    else:
        at, text = mark, f"{context}: {problem}" if context else problem
    note = f" ({err.note.strip()})" if err.note else ""
    return f"{shown}:{at.line + 1}:{at.column + 1}: {text}{note}"


def _resolve_extends(path: Path, seen: tuple[Path, ...] = ()) -> list[str]:
    """Config arguments for ``path``: its bases first (recursively), then the file itself (without ``extends``)."""
    if path in seen:
        raise ConfigError(f"config {path}: 'extends' forms a cycle through {', '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from err
    if not isinstance(content, dict) or "extends" not in content:
        return [str(path)]
    bases = content.pop("extends")
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: key 'extends' must be a file name or a list of file names")
    out: list[str] = []
    for base in bases:
        out += _resolve_extends((path.parent / base).resolve(), (*seen, path))
    # jsonargparse accepts YAML text in place of a path; the file minus its 'extends' key goes last.
    return out + [yaml.safe_dump(content, sort_keys=False)] if content else out


def _merge(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _apply_term_overrides(out: list[str], overrides: dict[str, dict[str, object]]) -> list[str]:
    """Turn ``--<term>.<option>=value`` (e.g. ``--contrast.lambda_ms=0.05``) into an edit of ``model.losses``.

    jsonargparse cannot address one element of a list from the command line; sweeps need exactly that. The
    configs given so far are merged, the loss term whose ``init_args.name`` (or default name) matches is edited,
    and the edited list is appended as one more config.
    """
    merged: dict = {}
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            text = Path(out[i + 1]).read_text() if out[i + 1].endswith((".yaml", ".yml")) else out[i + 1]
            _merge(merged, yaml.safe_load(text) or {})
    losses = ((merged.get("model") or {}).get("losses")) or []
    defaults = {"MultiScaleContrast": "contrast", "CrossEntropy": "ce"}
    for name, options in overrides.items():
        matches = [t for t in losses if isinstance(t, dict) and ((t.get("init_args") or {}).get("name") or
                   defaults.get(str(t.get("class_path", "")).rsplit(".", 1)[-1])) == name]
        if not matches:
            raise ConfigError(f"--{name}.*: no loss term named {name!r} in model.losses of the given configs")
        matches[0].setdefault("init_args", {}).update(options)
    return out + ["--config", yaml.safe_dump({"model": {"losses": losses}}, sort_keys=False)]


def expand_configs(argv: Sequence[str]) -> list[str]:
    """Expand ``extends`` chains of ``--config FILE`` and ``--<term>.<option>=value`` loss-term shorthands.

    A config file or command-line value that names another ``class_path`` for a node (``--model.optimizer=Adam``,
    ``--config adam.yaml`` after ``--config base.yaml``) starts that node from the new class's defaults, whichever
    way the files are combined (see :func:`_drop_replaced_init_args`).
    """
    out: list[str | list[str]] = []  # arguments; a list holds the config files of one --config, expanded
    overrides: dict[str, dict[str, object]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv) and Path(argv[i + 1]).suffix in (".yaml", ".yml"):
            out.append(_resolve_extends(Path(argv[i + 1]).resolve()))
            i += 2
        elif arg.startswith("--config=") and Path(arg[9:]).suffix in (".yaml", ".yml"):
            out.append(_resolve_extends(Path(arg[9:]).resolve()))
            i += 1
        elif re.fullmatch(r"--(contrast|ce)\.\w+(=.*)?", arg, flags=re.DOTALL):  # --key=value or --key value
            if "=" in arg:
                key, value = arg[2:].split("=", 1)
            elif i + 1 < len(argv):
                key, value, i = arg[2:], argv[i + 1], i + 1
            else:
                raise ConfigError(f"{arg}: needs a value (--{arg[2:]}=VALUE)")
            term, option = key.split(".", 1)
            try:
                overrides.setdefault(term, {})[option] = yaml.safe_load(value)
            except yaml.YAMLError as err:
                problem = " ".join(str(getattr(err, "problem", "") or err).split())
                raise ConfigError(f"--{key}: value {value!r} is not valid YAML ({problem})") from err
            i += 1
        else:
            out.append(arg)
            i += 1
    flat = _drop_replaced_init_args(out)
    return _apply_term_overrides(flat, overrides) if overrides else flat


def _class_nodes(tree: object, keys: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """``(key path, class_path)`` of every mapping with a ``class_path`` in a config, outside lists."""
    if not isinstance(tree, dict):
        return []
    found = [(keys, tree["class_path"])] if "class_path" in tree else []
    for key, value in tree.items():
        found += _class_nodes(value, (*keys, key))
    return found


def _cli_class(arg: str) -> tuple[tuple[str, ...], str] | None:
    """``(key path, class)`` of a command-line ``--a.b=Class``, ``--a.b.class_path=Class`` or
    ``--a.b='{class_path: Class, ...}'`` (``None`` for anything else; whether ``a.b`` is a class node is checked
    against the configs)."""
    match = re.fullmatch(r"--([\w.]+)=(.+)", arg, flags=re.DOTALL)
    if match is None:
        return None
    keys, value = tuple(match.group(1).split(".")), match.group(2)
    if keys[-1] == "class_path":
        return keys[:-1], value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("class_path"), str):
        return keys, parsed["class_path"]
    return (keys, parsed) if isinstance(parsed, str) and re.fullmatch(r"[A-Za-z_][\w.]*", parsed) else None


def _same_class(a: object, b: object) -> bool:
    """Whether two ``class_path`` values name the same class (``Adam`` and ``torch.optim.Adam`` do)."""
    return str(a).rsplit(".", 1)[-1] == str(b).rsplit(".", 1)[-1] and (
        "." not in str(a) or "." not in str(b) or str(a) == str(b))


def _node(tree: object, keys: tuple[str, ...]) -> object:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


# Options that name the experiment rather than configure the class: a new logger class (`_wandb.yaml` after an
# experiment's CSV logger) keeps the experiment's run name.
_KEPT_ACROSS_CLASSES = {("trainer", "logger"): ("name",)}


def _drop_replaced_init_args(args: list[str | list[str]]) -> list[str]:
    """The command line with every ``--config``, where a later new ``class_path`` starts from that class's defaults.

    jsonargparse keeps the earlier ``init_args`` of a node that the new class also accepts: ``optimizer:
    {class_path: torch.optim.Adam, init_args: {lr: 1.0e-4}}`` over the defaults' SGD would silently inherit SGD's
    ``weight_decay: 5.0e-4``. A config file, or a command-line ``--key=Class`` / ``--key.class_path=Class``, that
    names another class means that class as written, so the ``init_args`` of that node in every earlier file are
    dropped, across ``extends`` chains and separate ``--config`` arguments alike (only the files that change are
    passed as YAML text instead of a path). The one exception is the run name of a logger
    (``trainer.logger.init_args.name``), which names the experiment whichever logger records it.

    Args:
        args: the command line, each ``--config`` already expanded into the list of its files (bases first).
    """
    files = [f for a in args if isinstance(a, list) for f in a]
    trees = [yaml.safe_load(Path(f).read_text() if f.endswith((".yaml", ".yml")) else f) or {} for f in files]
    edited = [False] * len(files)
    seen = 0  # files before the current argument

    def replace(keys: tuple[str, ...], new_class: object, before: int) -> None:
        current = None  # the class in effect at this node as the earlier files are applied
        for j in range(before):
            node = _node(trees[j], keys)
            if not isinstance(node, dict):
                continue
            current = node.get("class_path", current)
            if current is None or _same_class(current, new_class) or "init_args" not in node:
                continue
            kept = {k: v for k, v in (node.pop("init_args") or {}).items() if k in _KEPT_ACROSS_CLASSES.get(keys, ())}
            if kept:
                node["init_args"] = kept
            edited[j] = True

    for arg in args:
        if isinstance(arg, list):
            for tree in trees[seen:seen + len(arg)]:
                for keys, new_class in _class_nodes(tree):
                    replace(keys, new_class, seen)
                seen += 1
        elif (found := _cli_class(arg)) is not None and any(
                isinstance(_node(t, found[0]), dict) and "class_path" in _node(t, found[0]) for t in trees[:seen]):
            replace(*found, seen)
    out: list[str] = []
    k = 0
    for arg in args:
        if not isinstance(arg, list):
            out.append(arg)
            continue
        for f in arg:
            out += ["--config", yaml.safe_dump(trees[k], sort_keys=False) if edited[k] else f]
            k += 1
    return out


def _one_line(err: BaseException) -> str:
    # Errors raised in a DataLoader worker arrive with the worker's traceback in the message: keep the last line.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return text.removeprefix(prefix)


def _condense(message: str) -> str:
    """jsonargparse's nested, multi-line type errors as one line: the full key and the innermost reason."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", message).replace("NoneType", "None")
    lines = [ln.strip().removeprefix("- ").strip() for ln in text.splitlines() if ln.strip()]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return " ".join(lines)
    structural = ("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value type:", "Given value:",
                  "Problem with given class_path", "Expected a None")
    reasons = list(dict.fromkeys(ln for ln in lines if not ln.startswith(structural))) or ["invalid value"]
    reason = "; ".join(reasons)
    given = next((ln[len("Given value: "):] for ln in lines if ln.startswith("Given value:")), "")
    if "Got value" not in reason and given and len(given) < 80:
        reason += f". Got value: {given}"
    return f'key "{".".join(keys)}": {reason}'


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
    """Entry point of the ``contrastseg`` console script (``fit``, ``validate``, ``test``, ``predict``).

    Returns the finished :class:`ContrastSegCLI` (its ``trainer``, ``model`` and ``datamodule``) when called
    from Python; user-input errors exit with status 2 and a one-line message.
    """
    argv = list(sys.argv[1:] if args is None else args)
    quiet_third_party()
    if argv[:1] == ["check-data"]:
        from contrastseg.data.check import main as check_main

        raise SystemExit(check_main(argv[1:]))
    if argv[:1] == ["compare"]:
        from contrastseg.compare import main as compare_main

        raise SystemExit(compare_main(argv[1:]))
    if argv[:1] == ["collect"]:
        from contrastseg.evaluation.collect import main as collect_main

        raise SystemExit(collect_main(argv[1:]))
    # `predict CHECKPOINT IMAGES OUTPUT` (a positional checkpoint) writes colour masks for a folder of images;
    # `predict --config ... --ckpt_path ...` stays Lightning's subcommand over the data module's test split.
    if argv[:1] == ["predict-folder"] or (argv[:1] == ["predict"] and len(argv) > 1 and not argv[1].startswith("-")):
        from contrastseg.predict import main as predict_main

        raise SystemExit(predict_main(argv[1:]))
    prog = sys.argv
    try:
        # The expanded command line stands in for sys.argv while the CLI runs, so that DDP's launcher re-executes
        # in its child processes exactly what this process parsed.
        sys.argv = [prog[0] if prog else "contrastseg", *expand_configs(argv)]
        return ContrastSegCLI(
            ContrastSegModule, SegmentationDataModule, subclass_mode_data=True, args=None,
            save_config_callback=LoggerSaveConfigCallback, save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            trainer_class=ContrastSegTrainer,
            parser_kwargs={"exit_on_error": False, "description": DESCRIPTION, "epilog": EPILOG,
                           "formatter_class": ShortHelpFormatter,
                           **{cmd: {"exit_on_error": False, "formatter_class": ShortHelpFormatter,
                                    "usage": f"contrastseg {cmd} [-c CONFIG ...] [--KEY VALUE ...]"}
                              for cmd in _SUBCOMMANDS}},
        )
    except SIGTERMException:  # Lightning finished the batch and LastCheckpoint saved; a pre-empted job, not a success
        print("contrastseg: stopped by SIGTERM; last.ckpt was saved: continue with --ckpt_path last", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except ArgumentError as err:  # a config/CLI key is unknown, missing or malformed
        print(f"contrastseg: error: {_condense(str(err))}\n(see: contrastseg {' '.join(argv[:1])} --help)",
              file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        user_error = _find_user_error(err)
        if user_error is None:
            raise
        print(f"contrastseg: error: {_one_line(user_error)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.argv = prog


def run() -> None:
    """The console script: :func:`main` without a return value (a returned object would become the exit code)."""
    main()


if __name__ == "__main__":
    run()
