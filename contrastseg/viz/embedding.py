"""2-D maps of per-scale embeddings (t-SNE; UMAP when installed) and separability numbers behind them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from contrastseg.viz._mpl import pyplot, sklearn_module
from contrastseg.viz.features import FeatureSet
from contrastseg.viz.masks import Palette, legend_handles

__all__ = ["embed_2d", "plot_feature_spaces", "separability"]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def embed_2d(features: Any, *, method: str = "tsne", perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """``(N, D)`` rows -> ``(N, 2)`` points.

    Args:
        features: ``(N, D)`` array or tensor.
        method: ``"tsne"`` (scikit-learn, cosine distances, PCA initialisation) or ``"umap"`` (needs umap-learn).
        perplexity: t-SNE perplexity (clipped below ``N``).
        seed: random state.
    """
    x = _numpy(features).astype(np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"need (N >= 3, D) features, got shape {x.shape}")
    if method == "umap":
        try:
            import umap
        except ImportError as err:
            raise ImportError("method='umap' needs umap-learn (pip install umap-learn); method='tsne' works "
                              "with scikit-learn alone") from err
        return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(x)
    if method != "tsne":
        raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
    tsne = sklearn_module("manifold").TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3),
                                           metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(x)


def separability(features: Any, labels: Any, *, k: int = 5) -> dict[str, float]:
    """How well classes separate in the full-dimensional space (not the 2-D picture).

    Args:
        features: ``(N, D)`` rows.
        labels: ``(N,)`` classes.
        k: neighbours of the k-NN vote.

    Returns:
        ``knn_accuracy``: leave-one-out k-NN accuracy with cosine distance (each row classified by the majority
        class of its ``k`` nearest other rows; 1.0: every pixel's neighbours share its class);
        ``silhouette``: mean silhouette coefficient with cosine distance, in [-1, 1]. NaN where undefined
        (fewer than two classes or too few rows).
    """
    x, y = _numpy(features).astype(np.float32), _numpy(labels).astype(np.int64)
    classes = np.unique(y)
    if len(classes) < 2 or len(y) <= max(k, 2):
        return {"knn_accuracy": float("nan"), "silhouette": float("nan")}
    neighbours = sklearn_module("neighbors").NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x)
    _, index = neighbours.kneighbors(x)  # (N, k+1); each row's own index is among its nearest
    others = np.array([[j for j in row if j != i][:k] for i, row in enumerate(index)])  # (N, k)
    votes = np.stack([(y[others] == c).sum(axis=1) for c in classes], axis=1)  # (N, n_classes)
    knn = float((classes[votes.argmax(axis=1)] == y).mean())
    silhouette = float(sklearn_module("metrics").silhouette_score(x, y, metric="cosine"))
    return {"knn_accuracy": knn, "silhouette": silhouette}


def plot_feature_spaces(runs: Mapping[str, Sequence[FeatureSet]], *, class_names: Sequence[str], palette: Palette,
                        method: str = "tsne", seed: int = 0, size: float = 3.0,
                        point_size: float = 4.0) -> tuple[Any, dict[str, list[dict[str, float]]]]:
    """A grid of 2-D embeddings: one row per run, one column per scale, points coloured by class.

    Each panel's title gives the stride and the k-NN accuracy and silhouette of :func:`separability`, computed
    on the full-dimensional features, so the picture is backed by a number.

    Args:
        runs: ``{run name: extract_features(...) output}``; runs should share strides for the columns to line up.
        class_names: class names in class order.
        palette: dataset palette.
        method: ``"tsne"`` or ``"umap"`` (see :func:`embed_2d`).
        seed: random state of the embedding.
        size: inches per panel.
        point_size: scatter marker area.

    Returns:
        ``(figure, scores)`` with ``scores[run][scale]`` the :func:`separability` dict of that panel.
    """
    plt = pyplot()
    colours = np.asarray(palette, dtype=np.float32).reshape(-1, 3) / 255
    n_cols = max(len(sets) for sets in runs.values())
    fig, axes = plt.subplots(len(runs), n_cols, figsize=(size * n_cols, size * len(runs) + 0.5), squeeze=False)
    scores: dict[str, list[dict[str, float]]] = {}
    present: set[int] = set()
    for r, (name, sets) in enumerate(runs.items()):
        scores[name] = []
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(sets):
                ax.set_axis_off()
                continue
            fs = sets[c]
            labels = _numpy(fs.labels)
            present |= set(labels.tolist())
            points = embed_2d(fs.features, method=method, seed=seed)
            score = separability(fs.features, labels)
            scores[name].append(score)
            ax.scatter(points[:, 0], points[:, 1], s=point_size, c=colours[labels], linewidths=0)
            ax.set_title(f"stride {fs.stride}: kNN {100 * score['knn_accuracy']:.0f}%, "
                         f"sil {score['silhouette']:.2f}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name)
    fig.legend(handles=legend_handles(class_names, palette, sorted(present)), loc="lower center",
               ncol=min(len(present), 8), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig, scores
