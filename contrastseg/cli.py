"""The ``contrastseg`` command: LightningCLI with dataset facts linked into the model and one-line errors.

Configs are YAML files merged in the order given (``--config a.yaml --config b.yaml``). A config may start with
``extends: <file or list of files>`` (paths relative to it) to be applied on top of those, so experiment files are
short diffs over ``experiments/_defaults.yaml``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from contrastseg.data.base import SegmentationDataModule
from contrastseg.errors import ConfigError, ContrastSegError
from contrastseg.module import ContrastSegModule

__all__ = ["ContrastSegCLI", "expand_configs", "main"]


class ContrastSegCLI(LightningCLI):
    """LightningCLI whose model receives ``num_classes``, ``ignore_index`` and ``class_names`` from the data."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in ("num_classes", "ignore_index", "class_names"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")


def _resolve_extends(path: Path, seen: tuple[Path, ...] = ()) -> list[str]:
    """Config arguments for ``path``: its bases first (recursively), then the file itself (without ``extends``)."""
    if path in seen:
        raise ConfigError(f"config {path}: 'extends' forms a cycle through {', '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
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


def expand_configs(argv: Sequence[str]) -> list[str]:
    """Replace every ``--config FILE`` whose YAML has ``extends`` by the chain of configs it stands for."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv) and Path(argv[i + 1]).suffix in (".yaml", ".yml"):
            files, i = _resolve_extends(Path(argv[i + 1]).resolve()), i + 2
        elif arg.startswith("--config=") and Path(arg[9:]).suffix in (".yaml", ".yml"):
            files, i = _resolve_extends(Path(arg[9:]).resolve()), i + 1
        else:
            out.append(arg)
            i += 1
            continue
        for f in files:
            out += ["--config", f]
    return out


def _one_line(err: BaseException) -> str:
    # Errors raised in a DataLoader worker arrive with the worker's traceback in the message: keep the last line.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``contrastseg`` console script (``fit``, ``validate``, ``test``, ``predict``)."""
    argv = list(sys.argv[1:] if args is None else args)
    prog, sys.argv = sys.argv, sys.argv[:1]  # the expanded arguments replace the command line, not add to it
    try:
        ContrastSegCLI(
            ContrastSegModule, SegmentationDataModule, subclass_mode_data=True, args=expand_configs(argv),
            save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False,
        )
    except ContrastSegError as err:
        print(f"contrastseg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.argv = prog


if __name__ == "__main__":
    main()
