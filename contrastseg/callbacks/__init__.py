"""Callbacks for side jobs only (they cannot change the loss): fault-tolerant checkpoints, the contrastive health
monitor, progress lines, W&B media, the training clock, and the side jobs every ContrastSegModule run gets: the
non-finite loss policy, the per-class evaluation report and the random streams in checkpoints."""

from contrastseg.callbacks.checkpoint import AtomicCheckpointIO, LastCheckpoint
from contrastseg.callbacks.clock import TrainClock
from contrastseg.callbacks.eval_report import EvalReport
from contrastseg.callbacks.health import ContrastHealthMonitor
from contrastseg.callbacks.non_finite import NonFiniteLossGuard
from contrastseg.callbacks.progress import LineProgress
from contrastseg.callbacks.rng_state import RNGState
from contrastseg.callbacks.wandb import WandbMedia

__all__ = ["AtomicCheckpointIO", "ContrastHealthMonitor", "EvalReport", "LastCheckpoint", "LineProgress",
           "NonFiniteLossGuard", "RNGState", "TrainClock", "WandbMedia"]
