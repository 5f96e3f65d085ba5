"""contrastseg: supervised multi-scale and cross-scale contrastive learning for semantic segmentation.

Pissas, Ravasio, Da Cruz, Bergeles, "Multi-scale and Cross-scale Contrastive Learning for Semantic
Segmentation", ECCV 2022, as a PyTorch Lightning library.
"""

from contrastseg.errors import ConfigError, ContrastSegError, DataError, NonFiniteLossError
from contrastseg.module import ContrastSegModule

#: The version of this release of contrastseg.
__version__ = "0.1.0"

__all__ = [
    "ConfigError", "ContrastSegError", "ContrastSegModule", "DataError", "NonFiniteLossError", "__version__",
]
