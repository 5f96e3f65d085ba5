"""Visual exploration: masks and overlays, sampled anchors per scale, per-class IoU of runs, t-SNE of embeddings.

Plots need the ``notebooks`` extra (matplotlib, scikit-learn): ``pip install 'contrastseg[notebooks]'``. Every
function returns a matplotlib Figure (or arrays) and never calls ``plt.show()``, so it works in notebooks,
scripts and tests alike.
"""

from contrastseg.viz.anchors import AnchorSet, pair_pixel_counts, plot_anchors, sample_anchor_sets
from contrastseg.viz.embedding import embed_2d, plot_feature_spaces, separability
from contrastseg.viz.features import FeatureSet, extract_features, load_module
from contrastseg.viz.masks import colourise, denormalize, legend_handles, overlay, plot_predictions
from contrastseg.viz.metrics import per_class_iou, plot_iou_comparison

__all__ = [
    "AnchorSet", "FeatureSet", "colourise", "denormalize", "embed_2d", "extract_features", "legend_handles",
    "load_module", "overlay", "pair_pixel_counts", "per_class_iou", "plot_anchors", "plot_feature_spaces",
    "plot_iou_comparison", "plot_predictions", "sample_anchor_sets", "separability",
]
