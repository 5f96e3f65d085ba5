"""contrastseg: supervised multi-scale and cross-scale contrastive learning for semantic segmentation.

Pissas, Ravasio, Da Cruz, Bergeles, "Multi-scale and Cross-scale Contrastive Learning for Semantic
Segmentation", ECCV 2022, as a PyTorch Lightning library.
"""

from importlib import metadata as _metadata

from contrastseg.errors import (
    AnchorLimitError,
    CheckpointError,
    ConfigError,
    ContrastSegError,
    DataError,
    NonFiniteLossError,
)
from contrastseg.module import ContrastSegModule

# The one version literal is pyproject.toml's; the installed package metadata carries it.
try:
    __version__ = _metadata.version("contrastseg")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AnchorLimitError", "CheckpointError", "ConfigError", "ContrastSegError", "ContrastSegModule",
    "DataError", "NonFiniteLossError", "__version__",
]
