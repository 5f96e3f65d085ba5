"""Loss terms (``nn.Module`` shells) and their functional cores.

Functional core: :func:`sample_balanced_anchors` (Sec. 3.3; :func:`sample_anchor_indices_multiscale` draws all
scales in one call), :func:`supervised_infonce` (Eq. 1-2), :class:`MultiScaleContrastiveLoss` (Eq. 3-4). Terms
for :class:`~contrastseg.ContrastSegModule`: :class:`CrossEntropy` (optionally median-frequency weighted),
:class:`OhemCrossEntropy`, :class:`LovaszSoftmax`, :class:`MultiScaleContrast` (owns the projectors; Eq. 5's
lambdas), and the paper's Table 2 competitors on the same core: :class:`PixelContrast` (Wang et al. 2021, hard
anchors and a :class:`ClassMemory` of pixels and regions) and :class:`RegionContrast` (Hu et al. 2021). :func:`alignment_uniformity` measures how an embedding spreads (the health monitor logs it).
"""

from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.losses.contrastive import MultiScaleContrast, Projector
from contrastseg.losses.cross_entropy import CrossEntropy
from contrastseg.losses.health import alignment_uniformity
from contrastseg.losses.infonce import l2_normalize, supervised_infonce
from contrastseg.losses.lovasz import LovaszSoftmax
from contrastseg.losses.map_term import MapContrastTerm
from contrastseg.losses.memory import ClassMemory
from contrastseg.losses.multiscale import (
    ContrastiveLossOutput,
    MultiScaleContrastiveLoss,
    PresampledAnchors,
    downsample_labels,
)
from contrastseg.losses.ohem import OhemCrossEntropy, ohem_cross_entropy
from contrastseg.losses.pixel_contrast import PixelContrast
from contrastseg.losses.region_contrast import RegionContrast
from contrastseg.losses.sampling import (
    AnchorBudgetWarning,
    gather_pixels,
    sample_anchor_indices,
    sample_anchor_indices_multiscale,
    sample_balanced_anchors,
)

__all__ = [
    "AnchorBudgetWarning", "ClassMemory", "ContrastiveLossOutput", "CrossEntropy", "LossContext", "LossTerm", "LovaszSoftmax", "MapContrastTerm",
    "MultiScaleContrast", "MultiScaleContrastiveLoss", "OhemCrossEntropy", "PixelContrast", "PresampledAnchors", "Projector", "RegionContrast",
    "TermOutput", "alignment_uniformity", "downsample_labels", "gather_pixels", "l2_normalize", "ohem_cross_entropy", "sample_anchor_indices",
    "sample_anchor_indices_multiscale", "sample_balanced_anchors", "supervised_infonce",
]
