"""Evaluation: segmentation scores from confusion matrices."""

from contrastseg.evaluation.metrics import SegScores, confusion_matrix, scores_from_confusion, scores_table

__all__ = ["SegScores", "confusion_matrix", "scores_from_confusion", "scores_table"]
