import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from contrastseg.evaluation import scores_from_confusion, scores_table


def _np_confusion(pred: np.ndarray, target: np.ndarray, c: int) -> np.ndarray:
    cm = np.zeros((c, c), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            cm[t, p] += 1
    return cm


def _np_scores(cm: np.ndarray):
    ious = []
    for k in range(len(cm)):
        tp = cm[k, k]
        union = cm[k, :].sum() + cm[:, k].sum() - tp
        ious.append(tp / union if union else np.nan)
    return np.array(ious), np.nanmean(ious), np.trace(cm) / cm.sum()


def test_confusion_and_scores_match_numpy() -> None:
    """The matrix as ContrastSegModule accumulates it (torchmetrics, ignore 255) and the scores read from it."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, size=(3, 17, 23))
    target[rng.random(target.shape) < 0.2] = 255
    target[target == 4] = 1  # class 4 absent from the labels ...
    pred = rng.integers(0, 6, size=target.shape)
    pred[pred == 5] = 0  # ... class 5 absent from the predictions
    cm = MulticlassConfusionMatrix(6, ignore_index=255, validate_args=False)(torch.from_numpy(pred),
                                                                             torch.from_numpy(target))
    ref = _np_confusion(pred, target, 6)
    np.testing.assert_array_equal(cm.numpy(), ref)
    scores = scores_from_confusion(cm)
    iou, miou, acc = _np_scores(ref)
    np.testing.assert_allclose(scores.iou.numpy(), iou, rtol=1e-6)
    assert abs(scores.miou - miou) < 1e-9 and abs(scores.acc - acc) < 1e-9


def test_class_absent_everywhere_is_nan_and_excluded() -> None:
    cm = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    scores = scores_from_confusion(cm)
    assert torch.isnan(scores.iou[2])
    assert abs(scores.miou - (5 / 8 + 3 / 6) / 2) < 1e-9


def test_table_lists_every_class() -> None:
    scores = scores_from_confusion(torch.tensor([[5, 1], [2, 3]]))
    table = scores_table(scores, ["road", "car"])
    assert table.row_count == 2


def test_group_miou_hand_computed() -> None:
    from contrastseg.evaluation import group_miou

    # IoUs: class 0 = 5/(7+7-5), class 1 = 3/(5+4-3), class 2 = 0/1 (predicted once, never labelled), class 3 NaN.
    cm = torch.tensor([[5, 1, 1, 0], [2, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    scores = scores_from_confusion(cm)
    groups = group_miou(scores, {"a": (0, 1), "b": (1, 2), "c": (3,)})
    assert abs(groups["a"] - (5 / 9 + 3 / 6) / 2) < 1e-6
    assert abs(groups["b"] - (3 / 6 + 0) / 2) < 1e-6
    assert groups["c"] != groups["c"]  # NaN: no class of the group seen


def test_write_scores(tmp_path) -> None:
    import json

    from contrastseg.evaluation.metrics import write_scores

    scores = scores_from_confusion(torch.tensor([[5, 1], [2, 3]]))
    path = write_scores(scores, {"all": scores.miou}, ["road", "car"], tmp_path, "test", epoch=3)
    data = json.loads(path.read_text())
    assert data["epoch"] == 3 and abs(data["mIoU"] - scores.miou) < 1e-6 and data["per_class"][1]["class"] == "car"
    assert (tmp_path / "test_metrics.csv").read_text().splitlines()[0] == "class,iou,acc,pixels"
