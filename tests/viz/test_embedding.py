import numpy as np
import pytest
import torch

from contrastseg.viz import FeatureSet, embed_2d, plot_feature_spaces, separability


def _clusters(spread: float, n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 5
    x = np.concatenate([centres[c] + spread * rng.standard_normal((n, 16)) for c in range(3)])
    return x.astype(np.float32), np.repeat(np.arange(3), n)


def test_separability_ranks_tight_clusters_above_noise() -> None:
    tight, labels = _clusters(0.1)
    noise = np.random.default_rng(1).standard_normal(tight.shape).astype(np.float32)
    good, bad = separability(tight, labels), separability(noise, labels)
    assert good["knn_accuracy"] == 1.0 and good["silhouette"] > 0.8
    assert bad["knn_accuracy"] < 0.7 and abs(bad["silhouette"]) < 0.2


def test_separability_of_a_single_class_is_nan() -> None:
    out = separability(np.ones((5, 3)), np.zeros(5))
    assert np.isnan(out["knn_accuracy"]) and np.isnan(out["silhouette"])


def test_embed_2d_shape_and_errors() -> None:
    x, _ = _clusters(0.1, n=10)
    assert embed_2d(torch.from_numpy(x)).shape == (30, 2)
    with pytest.raises(ValueError, match="'tsne' or 'umap'"):
        embed_2d(x, method="pca")
    with pytest.raises(ValueError, match="N >= 3"):
        embed_2d(x[:2])


def test_plot_feature_spaces_grid_and_scores() -> None:
    x, labels = _clusters(0.1, n=15)
    noise = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    runs = {
        "CE": [FeatureSet(4, torch.from_numpy(noise), torch.from_numpy(labels), "encoder")] * 2,
        "CE + contrast": [FeatureSet(4, torch.from_numpy(x), torch.from_numpy(labels), "encoder")] * 2,
    }
    fig, scores = plot_feature_spaces(runs, class_names=["a", "b", "c"], palette=[(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    assert len(fig.axes) == 4
    assert len(fig.axes[0].collections[0].get_offsets()) == 45
    assert scores["CE + contrast"][0]["knn_accuracy"] > scores["CE"][0]["knn_accuracy"]
    assert fig.axes[2].get_title().startswith("stride 4: kNN 100%")


def _loo_knn_reference(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Leave-one-out k-NN by brute force: cosine distances, ties between classes go to the smaller class id."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    right = 0
    for i in range(len(x)):
        dist = [(1 - float(xn[i] @ xn[j]), j) for j in range(len(x)) if j != i]
        nearest = [j for _, j in sorted(dist)[:k]]
        counts = {c: sum(y[j] == c for j in nearest) for c in sorted(set(y.tolist()))}
        right += max(counts, key=lambda c: (counts[c], -c)) == y[i]
    return right / len(x)


def test_knn_accuracy_matches_a_brute_force_leave_one_out_with_a_single_sample_class() -> None:
    x, labels = _clusters(1.5, n=12, seed=3)
    x = np.concatenate([x, np.full((1, 16), 0.3, np.float32)])  # a class with one sample: no fold could hold it
    labels = np.concatenate([labels, [7]])
    for k in (1, 3, 5):
        assert separability(x, labels, k=k)["knn_accuracy"] == pytest.approx(_loo_knn_reference(x, labels, k))
