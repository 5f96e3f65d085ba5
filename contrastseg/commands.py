"""The ``contrastseg`` commands beside Lightning's ``fit``, ``validate``, ``test`` and ``predict``.

Each is a ``main(argv) -> exit status`` function with its own options; this table is the one place that names
them, dispatches to them and describes them in ``contrastseg --help``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "commands_help", "run_command"]


@dataclass(frozen=True)
class Command:
    """One command: how it is called, what it does, and its ``main`` (``"module:function"``, imported on use)."""

    arguments: str
    summary: str
    target: str


COMMANDS: dict[str, Command] = {
    "check-data": Command("DATASET ROOT", "check a dataset's files and labels before a long run",
                          "contrastseg.data.check:main"),
    "collect": Command("RUNS...", "finished runs -> the paper's ablation table (mean +- std over seeds)",
                       "contrastseg.evaluation.collect:main"),
    "compare": Command("--config A.yaml --config-b B.yaml --seeds S ...",
                       "train two configs over seeds, compare at equal epochs and equal time",
                       "contrastseg.compare:main"),
    "predict-folder": Command("CKPT IMAGES OUTPUT", "label, colour and overlay files for a folder of images",
                              "contrastseg.predict:main"),
}


def run_command(argv: Sequence[str]) -> int | None:
    """Run the command ``argv`` names and return its exit status; ``None`` when it names none of :data:`COMMANDS`
    (a Lightning subcommand, or no command)."""
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:
        return None
    module, function = command.target.split(":")
    return getattr(importlib.import_module(module), function)(list(argv[1:]))


def commands_help() -> str:
    """The commands as ``contrastseg --help`` lists them: the call, then the summary (on the next line when the
    call is long)."""
    lines = ["more commands:"]
    for name, command in COMMANDS.items():
        call = f"{name} {command.arguments}"
        lines += [f"  {call:<26}{command.summary}"] if len(call) < 26 else [f"  {call}", f"{'':28}{command.summary}"]
    return "\n".join(lines)
