"""The ``contrastseg`` command's help: what the tool is, one line per command, one sentence per option.

LightningCLI's help describes "Lightning Trainer command line tool", cuts the subcommands' docstrings mid-sentence
and prints every option's whole docstring with its reStructuredText markup (2,000 lines for ``fit --help``). Here
the top level describes contrastseg and lists every command on one line, and each option keeps the first sentence
of its description, its type and its default.
"""

from __future__ import annotations

import functools
import re
from argparse import SUPPRESS, Action
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning import Trainer

from contrastseg.commands import commands_help

__all__ = ["DESCRIPTION", "EPILOG", "ContrastSegTrainer", "ShortHelpFormatter"]

DESCRIPTION = """contrastseg: semantic segmentation with supervised multi-scale and cross-scale contrastive
learning (Pissas et al., ECCV 2022). Configs are YAML files given with --config (merged in order; 'extends:' in a
file applies its base files first); --KEY VALUE overrides one value. 'contrastseg COMMAND --help' lists options."""

EPILOG = commands_help()

_SUMMARIES = {
    "fit": "Train a model (--ckpt_path last resumes the newest run trained with the same config).",
    "validate": "Score a checkpoint on the validation split (per-class IoU table, val_metrics.json).",
    "test": "Score a checkpoint on the test split (per-class IoU table, test_metrics.json).",
    "predict": "Predict the class maps of the data module's test split with a checkpoint.",
}

_RST = [(re.compile(r":\w+:`~?([^`]+)`"), r"\1"), (re.compile(r"``([^`]+)``"), r"\1"), (re.compile(r"`([^`]+)`_?"), r"\1")]
# The end of a description's first sentence: a full stop and a space before what starts the next one (not "e.g.").
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)\.\s+(?=[A-Z(`'\"])")


def plain_first_sentence(text: str) -> str:
    """The first sentence of an option's description, without reStructuredText markup."""
    for pattern, replacement in _RST:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    match = _SENTENCE_END.search(text)
    return text[: match.start() + 1] if match else text


_KNOWN = re.compile(r"known subclasses: ([^)]*)\)$")


def _fewer_subclasses(text: str, action: Action) -> str:
    """Where a type lists other libraries' subclasses (Lightning's callbacks, plugins, profilers, ...), name
    contrastseg's and count the others (``--KEY.help CLASS`` shows any of them)."""
    match = _KNOWN.search(text)
    if match is None:
        return text
    names = [n.strip() for n in match.group(1).split(",") if n.strip()]
    ours = [n for n in names if n.startswith("contrastseg.")]
    if len(names) - len(ours) <= 4:
        return text
    others = f"{len(names) - len(ours)} of other libraries"
    option = next((o for o in action.option_strings if o.startswith("--")), "--KEY")
    listed = ", ".join([*ours, others]) + f"; see {option}.help CLASS"
    return text[: match.start()] + f"known subclasses: {listed})"


class ShortHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter with one sentence per option and descriptions kept as written."""

    def _get_help_string(self, action: Action) -> str:
        original = action.help
        if isinstance(original, str) and original != SUPPRESS and "%(" not in original:
            action.help = plain_first_sentence(original)
        try:
            return _fewer_subclasses(super()._get_help_string(action), action)
        finally:
            action.help = original

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Descriptions and the epilog are laid out by hand: keep their lines.
        return "\n".join(indent + line for line in text.splitlines())


def _summarised(name: str) -> Any:
    """``Trainer.<name>`` with a one-line summary in place of its docstring's first paragraph (what LightningCLI
    shows as the command's help); the signature and the ``Args`` section, which give the options, are kept."""
    method = getattr(Trainer, name)

    @functools.wraps(method)
    def command(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **kwargs)

    rest = (method.__doc__ or "").split("\n\n", 1)
    command.__doc__ = _SUMMARIES[name] + ("\n\n" + rest[1] if len(rest) > 1 else "")
    return command


class ContrastSegTrainer(Trainer):
    """Trainer: where and how long to train, precision, logging and checkpoints (Lightning's Trainer)."""

    fit = _summarised("fit")
    validate = _summarised("validate")
    test = _summarised("test")
    predict = _summarised("predict")
