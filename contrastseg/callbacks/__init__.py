"""Callbacks for side jobs only (they cannot change the loss): W&B media."""

from contrastseg.callbacks.wandb import WandbMedia

__all__ = ["WandbMedia"]
