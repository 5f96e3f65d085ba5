"""Evaluation: scores from confusion matrices, and test-time inference (sliding windows, multi-scale + flip)."""

from contrastseg.evaluation.inference import (
    ADE20K_SCALES,
    CITYSCAPES_SCALES,
    EvalConfig,
    infer,
    multiscale_flip_inference,
    slide_inference,
)
from contrastseg.evaluation.metrics import (
    SegScores,
    confusion_matrix,
    group_miou,
    scores_from_confusion,
    scores_table,
)

__all__ = [
    "ADE20K_SCALES", "CITYSCAPES_SCALES", "EvalConfig", "SegScores", "confusion_matrix", "group_miou", "infer",
    "multiscale_flip_inference", "scores_from_confusion", "scores_table", "slide_inference",
]
