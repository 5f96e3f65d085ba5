"""Exceptions whose message is shown to the user as a one-line error by the CLI."""

from __future__ import annotations


class ContrastSegError(Exception):
    """Base class of errors caused by user input (config, data, weights) rather than by a bug."""


class ConfigError(ContrastSegError, ValueError):
    """A configuration value is missing, malformed or inconsistent; the message names the key."""


class DataError(ContrastSegError, ValueError):
    """A dataset on disk is missing, incomplete or holds unexpected values; the message names the file."""


class NonFiniteLossError(ContrastSegError, FloatingPointError):
    """A training loss was NaN or infinite; the message names the step, the terms and the batch's files."""


class AnchorLimitError(ContrastSegError, MemoryError):
    """``sampling="all"`` met more anchors than its hard cap; the message gives the count and the memory it needs."""


class CheckpointError(ContrastSegError, OSError):
    """A checkpoint cannot be written (full disk, permissions) or loaded (missing, corrupt, or holding objects that
    would run code when unpickled); the message names the file and the cause."""
