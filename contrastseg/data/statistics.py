"""Per-image label statistics of a split, computed once and cached: class presence and pixel counts."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

__all__ = ["cached_per_image", "class_pixel_counts", "median_frequency_weights"]


def _mask_loader(dataset: Dataset) -> Callable[[int], np.ndarray]:
    if hasattr(dataset, "load_mask"):  # SegmentationDataset: the remapped label alone, no image decoded
        return dataset.load_mask  # type: ignore[attr-defined]
    return lambda i: np.asarray(dataset[i]["mask"])  # any dataset of {"image", "mask"} items


def _cache_key(dataset: Dataset) -> str | None:
    """What identifies a dataset's labels: its ``cache_key`` attribute, or each label file with its size and
    modification time plus the raw-to-train lookup table; ``None`` (no cache) for anything else."""
    key = getattr(dataset, "cache_key", None)
    if key is None and getattr(dataset, "pairs", None):
        files = [(str(p[1]), *((st := Path(p[1]).stat()).st_size, st.st_mtime_ns)) for p in dataset.pairs]
        lut = getattr(dataset, "lut", None)
        lut_hash = hashlib.sha1(np.ascontiguousarray(lut).tobytes()).hexdigest() if lut is not None else None
        key = (files, lut_hash, getattr(dataset, "ignore_index", None))
    return None if key is None else hashlib.sha1(repr(key).encode()).hexdigest()[:16]


def cached_per_image(dataset: Dataset, kind: str, num_classes: int, compute: Callable[[np.ndarray], np.ndarray],
                     *, cache_dir: str | Path | None = None, load_mask: Callable[[int], np.ndarray] | None = None,
                     dtype: type = np.int64) -> np.ndarray:
    """``(N, C)`` array, row ``i`` = ``compute(mask_i)``; cached as ``<kind>-<dataset>-<C>-<hash>.npy``.

    The cache key hashes what determines the labels: for a dataset of files (``pairs``), every label file's path,
    size and modification time and the raw-to-train lookup table, so a changed or relabelled dataset is
    recomputed; otherwise the dataset's ``cache_key`` attribute (the synthetic dataset's size, seed and split).
    A dataset with neither is computed every time. Without ``cache_dir`` the cache goes to
    ``~/.cache/contrastseg``. Written atomically under a name of its own, so processes that compute the same
    table at once (DDP) do not collide.

    Args:
        dataset: a :class:`SegmentationDataset` (masks read alone) or any dataset of ``{"mask": ...}`` items.
        kind: the statistic's name, part of the cache file name.
        num_classes: ``C``.
        compute: ``(H, W)`` mask -> ``(C,)`` row.
        cache_dir: where the ``.npy`` goes (default ``~/.cache/contrastseg``).
        load_mask: ``index -> mask`` overriding how masks are read.
        dtype: the table's dtype.

    Returns:
        The ``(N, C)`` table, read from the cache when it exists.
    """
    load = load_mask or _mask_loader(dataset)
    key = _cache_key(dataset)
    folder = Path(cache_dir or Path.home() / ".cache" / "contrastseg").expanduser()
    path = folder / f"{kind}-{type(dataset).__name__}-{num_classes}-{key}.npy"
    if key is not None and path.is_file():
        return np.load(path)
    table = np.zeros((len(dataset), num_classes), dtype=dtype)
    for i in range(len(dataset)):
        table[i] = compute(load(i))
    if key is not None:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=path.stem, suffix=".tmp", delete=False) as tmp:
            np.save(tmp, table)
        Path(tmp.name).replace(path)  # atomic: a crash never leaves a half-written cache
    return table


def class_pixel_counts(dataset: Dataset, num_classes: int, *, cache_dir: str | Path | None = None) -> np.ndarray:
    """``(N, C)`` int64: labelled pixels of each class in each item (ignore and out-of-range values not counted)."""
    def count(mask: np.ndarray) -> np.ndarray:
        values = np.asarray(mask).ravel().astype(np.int64)
        return np.bincount(values[(values >= 0) & (values < num_classes)], minlength=num_classes)

    return cached_per_image(dataset, "pixels", num_classes, count, cache_dir=cache_dir)


def median_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """SegNet's median frequency balancing: ``w_c = median(f) / f_c``.

    ``f_c`` = pixels of class ``c`` / all labelled pixels of the images that contain ``c``; classes absent from
    the split get weight 0 (nothing to weigh), and the median is over the present classes.
    """
    counts = np.asarray(counts, dtype=np.float64)  # (N, C)
    totals = counts.sum(axis=1, keepdims=True)  # (N, 1) labelled pixels per image
    present = counts > 0
    denom = (totals * present).sum(axis=0)  # (C,) pixels of the images containing c
    freq = np.divide(counts.sum(axis=0), denom, out=np.zeros(counts.shape[1]), where=denom > 0)
    seen = freq > 0
    weights = np.zeros_like(freq)
    weights[seen] = np.median(freq[seen]) / freq[seen]
    return weights
