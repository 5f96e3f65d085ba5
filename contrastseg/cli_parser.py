"""The ``contrastseg`` command's parser: Lightning's, with one-line errors, command-line classes that start from
their own defaults, and the ``--<term>.<option>`` loss-term shorthand."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import yaml
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.cli import LightningArgumentParser

from contrastseg._compat import has_option
from contrastseg.errors import ConfigError

__all__ = ["ContrastSegParser", "TermOption", "add_term_options"]


def _class_value(arg: str) -> tuple[tuple[str, ...], object] | None:
    """``(key path, value)`` of a command-line ``--a.b=Class``, ``--a.b.class_path=Class`` or
    ``--a.b='{class_path: Class, ...}'`` (``None`` for anything else)."""
    match = re.fullmatch(r"--([\w.]+)=(.+)", arg, flags=re.DOTALL)
    if match is None:
        return None
    keys, value = tuple(match.group(1).split(".")), match.group(2)
    if keys[-1] == "class_path":
        return keys[:-1], {"class_path": value}
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("class_path"), str):
        return keys, parsed
    # a bare class name: its last part capitalised (`Adam`, `torch.optim.Adam`), unlike `ddp` or `cpu`
    return (keys, parsed) if isinstance(parsed, str) and re.fullmatch(r"(?:\w+\.)*[A-Z]\w*", parsed) else None


def _condense(message: str) -> str:
    """jsonargparse's message as one line: the full key and the innermost reason.

    jsonargparse reports a value that fails a nested type (a union, a class's ``init_args``) as an indented tree,
    one ``Parser key`` line per level and every alternative's error at the leaves; a user needs the whole key
    (``data.batch_size``) and the reason (``Expected a int. Got value: x``), on one line.
    """
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", message).replace("NoneType", "None")
    lines = [ln.strip().removeprefix("- ").strip() for ln in text.splitlines() if ln.strip()]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return " ".join(lines)
    structural = ("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value type:", "Given value:",
                  "Problem with given class_path", "Expected a None")
    reason = "; ".join(dict.fromkeys(ln for ln in lines if not ln.startswith(structural))) or "invalid value"
    given = next((ln[len("Given value: "):] for ln in lines if ln.startswith("Given value:")), "")
    if "Got value" not in reason and given and len(given) < 80:
        reason += f". Got value: {given}"
    return f'key "{".".join(keys)}": {reason}'


class ContrastSegParser(LightningArgumentParser):
    """Lightning's argument parser with one-line errors, and with a command-line class value applied as a
    one-key config, so that it starts from the class's defaults as a class in a config file does
    (:mod:`contrastseg.cli_config`)."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Namespace | None = None,
                   **kwargs: Any) -> Namespace:
        args = list(sys.argv[1:] if args is None else args)
        _check_term_options_follow_configs(args)
        for i, arg in enumerate(args):
            found = _class_value(arg)
            # under a class-typed option (--model.optimizer, --model.net.init_args.decoder): jsonargparse gives each
            # of those an option --KEY.help CLASS
            if found is not None and any(has_option(self, f"--{'.'.join(found[0][:n])}.help")
                                         for n in range(1, len(found[0]) + 1)):
                keys, value = found
                for key in reversed(keys):
                    value = {key: value}
                args[i] = f"--config={yaml.safe_dump(value, sort_keys=False)}"
        self._args = args
        return super().parse_args(args, namespace, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a subcommand's or a class's parser: jsonargparse handles what it raises
            super().error(message, ex)
        # jsonargparse names a subcommand's parser "contrastseg [options] fit"; the top-level parser is "contrastseg"
        command = self.prog.replace(" [options]", "")
        if " " not in command and getattr(self, "_args", None) and not self._args[0].startswith("-"):
            command += f" {self._args[0]}"  # the subcommand given
        print(f"contrastseg: error: {_condense(message)}\n(see: {command} --help)", file=sys.stderr)
        raise SystemExit(2)


def _check_term_options_follow_configs(args: Sequence[str]) -> None:
    """A ``--<term>.<option>`` edits ``model.losses`` as the arguments before it set it, so a later ``--config``
    that sets ``model.losses`` would drop the edit without a word: refuse a shorthand before any ``--config``."""
    configs = [i for i, arg in enumerate(args) if arg.split("=", 1)[0] in ("--config", "-c")]
    for i, arg in enumerate(args):
        name = arg[2:].split(".", 1)[0] if arg.startswith("--") and "." in arg else None
        if name in TermOption.names and configs and configs[-1] > i:
            config = args[configs[-1]].partition("=")[2] or (args[configs[-1] + 1] if configs[-1] + 1 < len(args)
                                                              else "")
            raise ConfigError(f"{arg.split('=', 1)[0]} comes before --config {config}, which may set model.losses "
                              f"again: give --{name}.* options after every --config")


class TermOption(argparse.Action):
    """``--<term>.<option>=VALUE``: one option of the loss term named ``<term>`` in ``model.losses`` as parsed so
    far (jsonargparse cannot address one element of a list from the command line; sweeps need exactly that)."""

    default_names: dict[str, str] = {}  # class name -> the name of a term whose config sets none (add_term_options)
    names: set[str] = set()  # the shorthands' prefixes (``contrast``, ``ce``)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS})

    def __call__(self, parser: Any, cfg: Namespace, values: Any, option_string: str | None = None) -> None:
        term, option = self.dest.split(".", 1)
        try:
            value = yaml.safe_load(values)
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", "") or err).split())
            raise ConfigError(f"--{self.dest}: value {values!r} is not valid YAML ({problem})") from err
        losses = [t.as_dict() if isinstance(t, Namespace) else t for t in cfg.get("model.losses") or []]
        match = next((t for t in losses if isinstance(t, dict) and ((t.get("init_args") or {}).get("name")
                      or self.default_names.get(str(t.get("class_path", "")).rsplit(".", 1)[-1])) == term), None)
        if match is None:
            raise ConfigError(f"--{self.dest}: no loss term named {term!r} in model.losses as the arguments before "
                              "it configured it")
        match["init_args"] = {**(match.get("init_args") or {}), option: value}
        ActionConfigFile.apply_config(parser, cfg, "config", json.dumps({"model": {"losses": losses}}))


def add_term_options(parser: LightningArgumentParser, terms: dict[str, type]) -> None:
    """Add ``--<name>.<option>`` for every constructor option of each loss term class (``{"contrast":
    MultiScaleContrast}``); a term in ``model.losses`` answers to its ``name``, or to its class's default name."""
    default_names = {}
    group = parser.add_argument_group("loss-term shorthands", "\n".join(
        f"{f'--{name}.OPTION VALUE':<26}one option of the {cls.__name__} term of model.losses"
        for name, cls in terms.items()))
    TermOption.names |= set(terms)
    for name, cls in terms.items():
        parameters = inspect.signature(cls).parameters
        default = parameters["name"].default if "name" in parameters else name
        default_names[cls.__name__] = default
        for option in parameters:
            group.add_argument(f"--{name}.{option}", action=TermOption).default_names = default_names
