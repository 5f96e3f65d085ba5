"""EvalReport: every validation's and test's per-class scores, printed and written beside the checkpoints."""

from __future__ import annotations

import io
import shutil

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info
from rich.console import Console, RenderableType
from tqdm import tqdm

from contrastseg.evaluation.metrics import group_miou, scores_table, write_scores
from contrastseg.runs import run_folder

__all__ = ["EvalReport"]


class EvalReport(Callback):
    """After every validation and test (not the sanity check), the scores the module computed: a per-class table
    (IoU, accuracy, labelled pixels, the means) and the group mIoUs, printed by process 0, and
    ``<stage>_metrics.json`` / ``.csv`` written in the run folder beside ``checkpoints/`` (no files without a
    logger: there is no run folder then).

    The text goes through Lightning: above the progress bar, or to Lightning's info log when there is none. The
    module provides ``last_scores[stage]`` (a :class:`~contrastseg.evaluation.SegScores`), ``class_names`` and
    ``class_groups``, as :class:`~contrastseg.ContrastSegModule` does; it adds an ``EvalReport`` to every trainer it
    runs in.
    """

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Not on_validation_epoch_end: Lightning runs the callbacks' hook before the module's, which computes the
        # scores.
        self._report(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def _report(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.sanity_checking:  # the sanity check's few batches are not a result
            return
        # The run folder (beside checkpoints/, for every logger) is broadcast from rank 0: every process must ask,
        # not only rank 0 (or DDP deadlocks).
        folder = run_folder(trainer) if trainer.loggers else None
        scores = getattr(pl_module, "last_scores", {}).get(stage)
        if not trainer.is_global_zero or scores is None:
            return
        names = list(pl_module.class_names)
        groups = group_miou(scores, getattr(pl_module, "class_groups", {}))
        title = f"{stage}, epoch {trainer.current_epoch}, step {trainer.global_step}"
        text = _plain_text(scores_table(scores, names, title=title))
        if groups:
            text += "\n" + "  ".join(f"mIoU {k}: {100 * v:.2f}" for k, v in groups.items())
        _print(trainer, text)
        if folder is not None:
            write_scores(scores, groups, names, folder, stage, epoch=trainer.current_epoch, step=trainer.global_step)


def _plain_text(renderable: RenderableType) -> str:
    """A rich renderable as plain text, as wide as the terminal (80 columns when the output is not one)."""
    console = Console(file=io.StringIO(), width=shutil.get_terminal_size().columns, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().rstrip("\n")


def _print(trainer: Trainer, text: str) -> None:
    """``text`` above the progress bar (every bar prints on process 0 only), else through Lightning's info log."""
    bar = trainer.progress_bar_callback
    if bar is None or not bar.is_enabled:
        rank_zero_info(text)
    elif isinstance(bar, TQDMProgressBar):
        # Lightning's TQDM print writes through a running bar only, and drops the text once validate's or test's
        # bar has closed; tqdm.write prints above whichever bars are drawn.
        tqdm.write(text)
    else:
        bar.print(text)
