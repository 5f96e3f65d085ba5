"""Loss terms (``nn.Module`` shells) and their functional cores."""

from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.losses.cross_entropy import CrossEntropy

__all__ = ["CrossEntropy", "LossContext", "LossTerm", "TermOutput"]
