"""Config files of the ``contrastseg`` command: ``extends`` chains, and a new class starting from its own defaults.

A config may start with ``extends: <file or list of files>`` (paths relative to it): its bases are applied first,
so experiment files are short diffs over ``experiments/_defaults.yaml``. :class:`ConfigFile` is the command's
``--config`` / ``-c`` action: it applies a file's bases, then the file, each through jsonargparse's own
:class:`~jsonargparse.ActionConfigFile`, which merges them into the options parsed so far.

jsonargparse keeps the earlier ``init_args`` of a node that a new ``class_path`` also accepts: ``optimizer:
{class_path: torch.optim.Adam, init_args: {lr: 1.0e-4}}`` over the defaults' SGD would silently inherit SGD's
``weight_decay: 5.0e-4``. Here a config that names another class means that class as written: before it is
applied, the ``init_args`` of that node parsed so far are dropped (the logger's run name excepted, see
:data:`KEPT_ACROSS_CLASSES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, Namespace

from contrastseg.errors import ConfigError

__all__ = ["KEPT_ACROSS_CLASSES", "ConfigFile", "config_chain", "read_config", "start_new_classes"]

# Options that name the experiment rather than configure the class: a new logger class (`_wandb.yaml` after an
# experiment's CSV logger) keeps the experiment's run name.
KEPT_ACROSS_CLASSES: dict[tuple[str, ...], tuple[str, ...]] = {("trainer", "logger"): ("name",)}


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


def config_chain(path: str | Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The configs a file stands for, bases first: ``(source, content)`` pairs.

    The source is the file's path, or, for a file with ``extends``, its content without that key as YAML text
    (jsonargparse accepts either); a file holding nothing but ``extends`` adds no pair of its own.

    Raises:
        ConfigError: a file is missing or not valid YAML, ``extends`` is malformed or forms a cycle.
    """
    path = Path(path).resolve()
    if path in seen:
        raise ConfigError(f"config {path}: 'extends' forms a cycle through {', '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from err
    if not isinstance(content, dict) or "extends" not in content:
        return [(str(path), content)]
    bases = content.pop("extends")
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: key 'extends' must be a file name or a list of file names")
    chain = [part for base in bases for part in config_chain(path.parent / base, (*seen, path))]
    return chain + [(yaml.safe_dump(content, sort_keys=False), content)] if content else chain


def read_config(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Config files (``extends`` resolved) merged key by key as plain YAML, for tools that read one section of a
    training config (``check-data --config``). Lists are replaced, mappings merged; ``class_path`` changes and
    ``key+:`` appends are not interpreted (the ``contrastseg`` command itself merges through jsonargparse)."""

    def merge(base: dict, new: dict) -> dict:
        for key, value in new.items():
            base[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
                else value
        return base

    merged: dict[str, Any] = {}
    for path in paths:
        for _, content in config_chain(path):
            if isinstance(content, dict):
                merge(merged, content)
    return merged


def _same_class(a: object, b: object) -> bool:
    """Whether two ``class_path`` values name the same class (``Adam`` and ``torch.optim.Adam`` do)."""
    return str(a).rsplit(".", 1)[-1] == str(b).rsplit(".", 1)[-1] and (
        "." not in str(a) or "." not in str(b) or str(a) == str(b))


def start_new_classes(cfg: Namespace, content: object, keys: tuple[str, ...] = ()) -> None:
    """Drop the ``init_args`` parsed so far (``cfg``) of every node to which ``content`` (a config about to be
    applied) gives another class, as ``{class_path: ...}`` or as a bare class name; nodes inside lists are left
    alone."""
    if not isinstance(content, dict):
        return
    for key, value in content.items():
        path = (*keys, str(key))
        node: Any = cfg
        for step in path:
            node = node.get(step) if isinstance(node, Namespace) else None
        new = value.get("class_path") if isinstance(value, dict) else value
        if (isinstance(node, Namespace) and node.get("class_path") and isinstance(new, str)
                and not _same_class(node["class_path"], new) and node.get("init_args") is not None):
            kept = {k: v for k, v in node["init_args"].items() if k in KEPT_ACROSS_CLASSES.get(path, ())}
            if kept:
                node["init_args"] = Namespace(kept)
            else:
                del node["init_args"]
        start_new_classes(cfg, value, path)


class ConfigFile(ActionConfigFile):
    """``--config FILE`` / ``-c FILE`` (or YAML text): jsonargparse's config action with ``extends`` chains and
    classes that start from their own defaults (see the module's description)."""

    def __call__(self, parser: Any, cfg: Namespace, values: Any, option_string: str | None = None) -> None:
        if isinstance(values, str) and Path(values).suffix in (".yaml", ".yml"):
            chain = config_chain(values)
        else:
            try:
                content = yaml.safe_load(values) if isinstance(values, str) else None
            except yaml.YAMLError:
                content = None  # jsonargparse reports it
            chain = [(values, content)]
        for source, content in chain:
            start_new_classes(cfg, content)
            self.apply_config(parser, cfg, self.dest, source)
