"""Loss terms (``nn.Module`` shells) and their functional cores.

Which one do I use? In a config or with :class:`~contrastseg.ContrastSegModule`, the term
:class:`MultiScaleContrast` (it owns the per-stage projectors and applies Eq. 5's lambdas); in your own
training loop, :class:`MultiScaleContrastiveLoss` on embeddings you project yourself (the term calls it).

Functional core: :func:`sample_balanced_anchors` (Sec. 3.3; :func:`sample_anchor_indices` returns pixel
indices instead, :func:`sample_anchor_indices_multiscale` draws all scales in one call),
:func:`supervised_infonce` (Eq. 1-2), :class:`MultiScaleContrastiveLoss` (Eq. 3-4),
:func:`ohem_cross_entropy`. Terms for :class:`~contrastseg.ContrastSegModule` (subclasses of
:class:`LossTerm`): :class:`CrossEntropy` (optionally median-frequency weighted), :class:`OhemCrossEntropy`,
:class:`LovaszSoftmax`, :class:`MultiScaleContrast`, and the paper's Table 2 competitors on the same core:
:class:`PixelContrast` (Wang et al. 2021, hard anchors and a :class:`ClassMemory` of pixels and regions) and
:class:`RegionContrast` (Hu et al. 2021). :func:`alignment_uniformity` measures how an embedding spreads (the
health monitor logs it).
"""

from contrastseg.losses.base import LossContext, LossTerm, TermOutput
from contrastseg.losses.contrastive import MultiScaleContrast, Projector
from contrastseg.losses.cross_entropy import CrossEntropy
from contrastseg.losses.health import alignment_uniformity
from contrastseg.losses.infonce import supervised_infonce
from contrastseg.losses.lovasz import LovaszSoftmax
from contrastseg.losses.map_term import MapContrastTerm
from contrastseg.losses.memory import ClassMemory
from contrastseg.losses.multiscale import ContrastiveLossOutput, MultiScaleContrastiveLoss
from contrastseg.losses.ohem import OhemCrossEntropy, ohem_cross_entropy
from contrastseg.losses.pixel_contrast import PixelContrast
from contrastseg.losses.region_contrast import RegionContrast
from contrastseg.losses.sampling import (
    AnchorBudgetWarning,
    sample_anchor_indices,
    sample_anchor_indices_multiscale,
    sample_balanced_anchors,
)

__all__ = [
    "AnchorBudgetWarning", "ClassMemory", "ContrastiveLossOutput", "CrossEntropy", "LossContext", "LossTerm",
    "LovaszSoftmax", "MapContrastTerm", "MultiScaleContrast", "MultiScaleContrastiveLoss", "OhemCrossEntropy",
    "PixelContrast", "Projector", "RegionContrast", "TermOutput", "alignment_uniformity",
    "ohem_cross_entropy", "sample_anchor_indices", "sample_anchor_indices_multiscale",
    "sample_balanced_anchors", "supervised_infonce",
]
