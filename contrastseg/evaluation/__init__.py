"""Evaluation: scores from confusion matrices, test-time inference (sliding windows, multi-scale + flip), and the
statistics of paired comparisons over seeds."""

from contrastseg.evaluation.bootstrap import compare_paired, paired_bootstrap_ci
from contrastseg.evaluation.inference import (
    ADE20K_SCALES,
    CITYSCAPES_SCALES,
    EvalConfig,
    infer,
    multiscale_flip_inference,
    slide_inference,
)
from contrastseg.evaluation.metrics import SegScores, group_miou, scores_from_confusion, scores_table

__all__ = [
    "ADE20K_SCALES", "CITYSCAPES_SCALES", "EvalConfig", "SegScores", "compare_paired", "group_miou", "infer",
    "multiscale_flip_inference", "paired_bootstrap_ci", "scores_from_confusion", "scores_table", "slide_inference",
]
