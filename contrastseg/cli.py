"""The ``contrastseg`` command: LightningCLI with dataset facts linked into the model and one-line errors.

Configs are YAML files merged in the order given (``--config a.yaml --config b.yaml``). A config may start with
``extends: <file or list of files>`` (paths relative to it) to be applied on top of those, so experiment files are
short diffs over ``experiments/_defaults.yaml``.

``fit --ckpt_path last`` resumes the newest ``last.ckpt`` of the run name (``<save_dir>/<name>/*/checkpoints``, not
only the new version folder Lightning would look in) and keeps logging into that run's version folder.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path

import yaml
from lightning import LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from contrastseg.callbacks.checkpoint import run_folder
from contrastseg.data.base import SegmentationDataModule
from contrastseg.errors import ConfigError, ContrastSegError
from contrastseg.module import ContrastSegModule
from contrastseg.resume import logger_init_args, resolve_last

__all__ = ["ContrastSegCLI", "expand_configs", "main"]

_SUBCOMMANDS = ("fit", "validate", "test", "predict")


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder beside ``checkpoints/`` and logs the same resolved config to W&B.

    Lightning saves it in ``trainer.log_dir``, which for W&B is the ``save_dir`` every run shares.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            folder = run_folder(trainer)  # broadcast from rank 0
            path = os.path.join(folder, self.config_filename)
            fs = get_filesystem(folder)
            # As Lightning's SaveConfigCallback.setup, with trainer.log_dir replaced by run_folder(trainer).
            if not self.overwrite and trainer.strategy.broadcast(trainer.is_global_zero and fs.isfile(path)):
                raise RuntimeError(f"{type(self).__name__} expected {path} to NOT exist: set overwrite to replace it")
            if trainer.is_global_zero:
                fs.makedirs(folder, exist_ok=True)
                self.parser.save(self.config, path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if loggers:
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            for logger in loggers:
                logger.experiment.config.update(resolved, allow_val_change=True)


class ContrastSegCLI(LightningCLI):
    """LightningCLI whose model receives ``num_classes``, ``ignore_index`` and ``class_names`` from the data, and
    whose ``--ckpt_path last`` finds the newest ``last.ckpt`` of the run name (see :func:`~contrastseg.resume.resolve_last`)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in ("num_classes", "ignore_index", "class_names", "class_groups", "palette"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def before_fit(self) -> None:
        # Lightning looks for "last" only in the checkpoint folder of the new logger version, which is empty.
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = resolve_last(self.trainer, logger_init_args(self.config[self.subcommand]),
                                               required=self.subcommand != "fit")

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
    """Expand ``extends`` chains of ``--config FILE`` and ``--<term>.<option>=value`` loss-term shorthands."""
    out: list[str] = []
    overrides: dict[str, dict[str, object]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv) and Path(argv[i + 1]).suffix in (".yaml", ".yml"):
            files, i = _resolve_extends(Path(argv[i + 1]).resolve()), i + 2
        elif arg.startswith("--config=") and Path(arg[9:]).suffix in (".yaml", ".yml"):
            files, i = _resolve_extends(Path(arg[9:]).resolve()), i + 1
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
            continue
        else:
            out.append(arg)
            i += 1
            continue
        for f in _drop_replaced_init_args(files):
            out += ["--config", f]
    return _apply_term_overrides(out, overrides) if overrides else out


def _class_nodes(tree: object, keys: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """``(key path, class_path)`` of every mapping with a ``class_path`` in a config, outside lists."""
    if not isinstance(tree, dict):
        return []
    found = [(keys, tree["class_path"])] if "class_path" in tree else []
    for key, value in tree.items():
        found += _class_nodes(value, (*keys, key))
    return found


def _drop_replaced_init_args(files: list[str]) -> list[str]:
    """The configs of one ``extends`` chain, where a later file's new ``class_path`` starts from that class's defaults.

    jsonargparse keeps the earlier ``init_args`` of a node that the new class also accepts: ``optimizer:
    {class_path: torch.optim.Adam, init_args: {lr: 1.0e-4}}`` over the defaults' SGD would silently inherit SGD's
    ``weight_decay: 5.0e-4``. A config that names another class means that class as written, so the earlier files'
    ``init_args`` of that node are dropped (only the files that change are passed as YAML text instead of a path).
    """
    trees = [yaml.safe_load(Path(f).read_text() if f.endswith((".yaml", ".yml")) else f) or {} for f in files]
    edited = [False] * len(files)
    for i, later in enumerate(trees):
        for keys, new_class in _class_nodes(later):
            current = None  # the class in effect at this node as the earlier files are applied
            for j in range(i):
                node = trees[j]
                for key in keys:
                    node = node.get(key) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    continue
                current = node.get("class_path", current)
                if current != new_class and node.pop("init_args", None) is not None:
                    edited[j] = True
    return [yaml.safe_dump(tree, sort_keys=False) if changed else f for f, tree, changed in zip(files, trees, edited)]


def _one_line(err: BaseException) -> str:
    # Errors raised in a DataLoader worker arrive with the worker's traceback in the message: keep the last line.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


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


_MORE_COMMANDS = (
    "more commands: contrastseg check-data DATASET ROOT (inspect a dataset), contrastseg collect RUNS... (runs -> "
    "the paper's ablation table), contrastseg predict CHECKPOINT IMAGES OUTPUT (label and colour files for a "
    "folder; options: contrastseg predict-folder --help)")


def main(args: Sequence[str] | None = None) -> ContrastSegCLI:
    """Entry point of the ``contrastseg`` console script (``fit``, ``validate``, ``test``, ``predict``).

    Returns the finished :class:`ContrastSegCLI` (its ``trainer``, ``model`` and ``datamodule``) when called
    from Python; user-input errors exit with status 2 and a one-line message.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["check-data"]:
        from contrastseg.data.check import main as check_main

        raise SystemExit(check_main(argv[1:]))
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
            parser_kwargs={"exit_on_error": False, "epilog": _MORE_COMMANDS,
                           **{cmd: {"exit_on_error": False} for cmd in _SUBCOMMANDS}},
        )
    except SIGTERMException:  # Lightning finished the batch and LastCheckpoint saved; a pre-empted job, not a success
        print("contrastseg: stopped by SIGTERM; last.ckpt was saved: continue with --ckpt_path last", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except ArgumentError as err:  # a config/CLI key is unknown, missing or malformed
        print(f"contrastseg: error: {_condense(str(err))}\n(see: contrastseg {' '.join(argv[:1])} --help)",
              file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:  # noqa: BLE001 - re-raised unless it is (or wraps) a user-input error
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
