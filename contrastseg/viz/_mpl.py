"""Lazy imports of the optional plotting and embedding libraries, with an install hint when missing."""

from __future__ import annotations

from typing import Any

_HINT = "pip install 'contrastseg[notebooks]'"


def pyplot() -> Any:
    """``matplotlib.pyplot``, or an ImportError saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"contrastseg.viz plots need matplotlib: {_HINT}") from err
    return plt


def sklearn_module(name: str) -> Any:
    """``sklearn.<name>``, or an ImportError saying how to install scikit-learn."""
    import importlib

    try:
        return importlib.import_module(f"sklearn.{name}")
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"contrastseg.viz embeddings need scikit-learn: {_HINT}") from err
