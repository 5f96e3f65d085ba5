"""Per-scale features (or projected embeddings) of a trained model with their labels, balanced per class."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastseg.errors import ConfigError
from contrastseg.losses.contrastive import MultiScaleContrast
from contrastseg.losses.multiscale import downsample_labels
from contrastseg.module import ContrastSegModule

__all__ = ["FeatureSet", "extract_features", "load_module"]


@dataclass(frozen=True)
class FeatureSet:
    """Pixels of one scale: ``features`` ``(N, D)`` float32 on the CPU and their classes ``labels`` ``(N,)``.

    Attributes:
        stride: the scale's stride.
        features: one row per sampled pixel (L2-normalised when extracted with ``normalize=True``).
        labels: class of each row (the label downsampled to the scale by nearest sampling, as in the loss).
        source: ``"encoder"`` (the stage's features) or ``"projected"`` (the contrastive projector's output).
    """

    stride: int
    features: Tensor
    labels: Tensor
    source: str


def load_module(checkpoint: str | Path | ContrastSegModule, *, device: str | torch.device = "cpu",
                **overrides: Any) -> ContrastSegModule:
    """A :class:`~contrastseg.ContrastSegModule` in eval mode from a checkpoint path (or the module itself).

    Args:
        checkpoint: a ``.ckpt`` written by training (``contrastseg fit`` checkpoints hold everything needed).
        device: where to put the module.
        **overrides: constructor arguments the checkpoint lacks or that should change. A module built in Python
            from objects (not from a config) needs ``net=`` a model of the same architecture and, when it had
            contrastive terms, ``losses=`` the same terms: their weights are then loaded from the checkpoint.
    """
    if isinstance(checkpoint, ContrastSegModule):
        return checkpoint.to(device).eval()
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        module = ContrastSegModule.load_from_checkpoint(path, map_location=device, weights_only=True, **overrides)
    except TypeError as err:
        if "net" not in str(err):
            raise
        raise ConfigError(f"{path} was saved by a module built in Python around an nn.Module, so the checkpoint "
                          "holds its weights but not its architecture: pass net=<a model of the same "
                          "architecture> (and losses=[...] if it had contrastive terms) to load_module") from err
    except RuntimeError as err:
        if "Unexpected key(s)" not in str(err) or "losses." not in str(err):
            raise
        raise ConfigError(f"{path} holds weights of loss terms (contrastive projectors) the module was not given: "
                          "pass losses=[...] with the terms it was trained with") from err
    return module.eval()


def _batches(data: Any, split: str) -> Iterable[dict[str, Tensor]]:
    if hasattr(data, "setup") and hasattr(data, f"{split}_dataloader"):  # a LightningDataModule
        if not getattr(data, "datasets", {}).get(split):
            data.setup({"train": "fit", "val": "validate"}.get(split, split))
        return getattr(data, f"{split}_dataloader")()
    return data  # a DataLoader or any iterable of {"image", "mask"} batches


@torch.no_grad()
def extract_features(
    model: str | Path | ContrastSegModule, data: Any, *, split: str = "val", num_batches: int = 2,
    source: str = "encoder", per_class: int = 200, normalize: bool = True, seed: int = 0,
    device: str | torch.device | None = None,
) -> list[FeatureSet]:
    """Run ``model`` on a few batches and return, per scale, up to ``per_class`` random pixels of every class.

    Args:
        model: a checkpoint path or a :class:`~contrastseg.ContrastSegModule`.
        data: a data module (its ``<split>_dataloader`` is used) or an iterable of ``{"image", "mask"}`` batches.
        split: ``"train"``, ``"val"`` or ``"test"`` (data modules only; the train loader is shuffled and augmented).
        num_batches: batches to read.
        source: ``"encoder"``: every encoder stage the model hands to its losses (works for any model, so CE-only
            and contrastive runs compare on equal terms); ``"projected"``: the embeddings of the model's
            :class:`~contrastseg.losses.MultiScaleContrast` projectors, the space the loss shapes.
        per_class: pixels kept per class and scale (fewer when a class has fewer); the same cap for every class
            so that frequent classes do not crowd a plot.
        normalize: L2-normalise every row (the loss compares embeddings by cosine similarity).
        seed: seed of the pixel draw.
        device: where the model runs (default: CUDA when available).

    Returns:
        One :class:`FeatureSet` per scale, fine to coarse. A module passed in is returned to its device and
        train/eval mode afterwards.

    Raises:
        ConfigError: ``source="projected"`` for a model trained without a contrastive term, or an unknown source.
    """
    if source not in ("encoder", "projected"):
        raise ConfigError(f"source must be 'encoder' or 'projected', got {source!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = dict(split=split, num_batches=num_batches, source=source, per_class=per_class, normalize=normalize,
                   seed=seed, device=device)
    if not isinstance(model, ContrastSegModule):
        return _extract(load_module(model, device=device), data, **options)
    where, training = next(model.parameters()).device, model.training  # the caller's module is put back after
    try:
        return _extract(model.to(device).eval(), data, **options)
    finally:
        model.to(where).train(training)


def _extract(module: ContrastSegModule, data: Any, *, split: str, num_batches: int, source: str, per_class: int,
             normalize: bool, seed: int, device: str | torch.device) -> list[FeatureSet]:
    """:func:`extract_features` with the module in eval mode on ``device``."""
    term = next((t for t in module.losses if isinstance(t, MultiScaleContrast)), None)
    if source == "projected" and term is None:
        raise ConfigError("source='projected' needs a model trained with a MultiScaleContrast term; "
                          "this one has none (use source='encoder')")
    strides = list(term.strides) if source == "projected" else list(module.net.feature_strides)
    generator = torch.Generator().manual_seed(seed)
    kept: list[list[tuple[Tensor, Tensor]]] = [[] for _ in strides]
    ignore = module.ignore_index
    for i, batch in enumerate(_batches(data, split)):
        if i >= num_batches:
            break
        image, mask = batch["image"].to(device), batch["mask"].to(device)
        feats = module.net(image).features
        maps = term.embed(feats) if source == "projected" else list(feats)
        for s, (emb, stride) in enumerate(zip(maps, strides)):
            labels_s = downsample_labels(mask, emb.shape[-2:], stride).reshape(-1).cpu()  # (B, h, w) -> (B*h*w,)
            rows = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).float().cpu()  # (B, D, h, w) -> (B*h*w, D)
            pick = _balanced(labels_s, ignore, per_class, generator)
            kept[s].append((rows[pick], labels_s[pick]))
    out = []
    for s, stride in enumerate(strides):
        rows = torch.cat([r for r, _ in kept[s]]) if kept[s] else torch.empty(0, 0)
        labels = torch.cat([lab for _, lab in kept[s]]) if kept[s] else torch.empty(0, dtype=torch.long)
        pick = _balanced(labels, ignore, per_class, generator)  # the cap over all batches together
        rows, labels = rows[pick], labels[pick]
        if normalize and rows.numel():
            rows = F.normalize(rows, dim=1)
        out.append(FeatureSet(stride=int(stride), features=rows, labels=labels, source=source))
    return out


def _balanced(labels: Tensor, ignore_index: int, per_class: int, generator: torch.Generator) -> Tensor:
    """Indices of up to ``per_class`` random positions of every class present in ``labels`` ``(N,)``."""
    picks = []
    for c in torch.unique(labels).tolist():  # a handful of classes, off the training path
        if c == ignore_index:
            continue
        where = (labels == c).nonzero().view(-1)
        picks.append(where[torch.randperm(where.numel(), generator=generator)[:per_class]])
    return torch.cat(picks) if picks else torch.empty(0, dtype=torch.long)
