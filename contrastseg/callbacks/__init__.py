"""Callbacks for side jobs only (they cannot change the loss): fault-tolerant checkpoints, the contrastive health
monitor, progress lines, W&B media, the training clock."""

from contrastseg.callbacks.checkpoint import AtomicCheckpointIO, LastCheckpoint
from contrastseg.callbacks.clock import TrainClock
from contrastseg.callbacks.health import ContrastHealthMonitor
from contrastseg.callbacks.progress import LineProgress
from contrastseg.callbacks.wandb import WandbMedia

__all__ = ["AtomicCheckpointIO", "ContrastHealthMonitor", "LastCheckpoint", "LineProgress", "TrainClock",
           "WandbMedia"]
