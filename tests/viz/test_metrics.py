import json

import numpy as np
import pytest
import torch

from contrastseg.evaluation import scores_from_confusion
from contrastseg.viz import per_class_iou, plot_iou_comparison

NAMES = ["road", "car", "pole"]


def test_per_class_iou_reads_every_form(tmp_path) -> None:
    scores = scores_from_confusion(torch.tensor([[8, 2, 0], [0, 5, 0], [0, 0, 0]]))
    expected = np.array([0.8, 5 / 7, np.nan])
    assert np.allclose(per_class_iou(scores, NAMES), expected, equal_nan=True)
    assert np.allclose(per_class_iou([0.8, 5 / 7, None], NAMES), expected, equal_nan=True)
    assert np.allclose(per_class_iou({"pole": None, "car": 5 / 7, "road": 0.8}, NAMES), expected, equal_nan=True)
    path = tmp_path / "val_metrics.json"
    path.write_text(json.dumps({"per_class": [{"class": n, "iou": v} for n, v in zip(NAMES, [0.8, 5 / 7, None])]}))
    assert np.allclose(per_class_iou(path, NAMES), expected, equal_nan=True)
    with pytest.raises(KeyError, match="pole"):
        per_class_iou({"road": 1.0, "car": 1.0}, NAMES)
    with pytest.raises(ValueError, match="2 IoUs for 3 classes"):
        per_class_iou([1.0, 1.0], NAMES)


def test_iou_comparison_bars_heights_and_legend() -> None:
    fig = plot_iou_comparison({"CE": [0.5, 0.2, 0.1], "CE + contrast": [0.6, 0.3, 0.4]}, NAMES, highlight=["pole"])
    ax = fig.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [50.0, 20.0, 10.0, 60.0, 30.0, 40.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CE (mIoU 26.7)", "CE + contrast (mIoU 43.3)"]
    bold = [t.get_text() for t in ax.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["pole"]


def test_iou_comparison_can_sort_by_the_first_run() -> None:
    fig = plot_iou_comparison({"a": [0.5, 0.2, 0.9], "b": [0.1, 0.1, 0.1]}, NAMES, sort=True)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["car", "road", "pole"]
