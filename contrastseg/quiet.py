"""Keep third-party notices a user cannot act on out of the command's output.

Only notices that say nothing about the user's own run are dropped: Lightning's advertisements for its cloud
products, its note that it reads the training loader to count the steps, a deprecation inside Lightning's own
code that PyTorch reports on every run, and its caution about ``args`` given beside the process's own command line
(which is how :func:`contrastseg.cli.main` runs from Python). Warnings about the user's settings (a logging interval longer than an
epoch, too few loader workers, ...) are kept. Used by the ``contrastseg`` command only: importing the library
changes no filter.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party"]

# Lightning's `rank_zero_info` lines, matched at their start.
_LIGHTNING_LINES = (
    "💡 Tip:",  # litlogger / litmodels advertisements
    "Loading `train_dataloader` to estimate number of stepping batches.",
)
# Warnings raised inside other libraries about their own code: (message regex, category).
_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),  # lightning's _pytree on torch >= 2.10
    # `main(args)` is the command line given from Python; Lightning warns whenever the process has command-line
    # arguments of its own as well (a notebook kernel's, pytest's).
    (r"LightningCLI's args parameter is intended to run from within Python", UserWarning),
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_LIGHTNING_LINES)


_FILTER = _DropLines()


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
