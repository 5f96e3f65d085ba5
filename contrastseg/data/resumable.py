"""Training order and augmentation as pure functions of (seed, epoch, position): runs resume mid-epoch exactly.

Lightning restores the loops' counters from a checkpoint but not the data: a run stopped mid-epoch would start the
epoch's data again, and augmentation drawn from a worker's random state depends on which worker and how far it
had prefetched. Here the training sampler yields ``(index, item_seed)`` pairs from a deterministic per-epoch order
(skipping the batches a resumed run has already trained on), and :class:`SeededItems` seeds torch, numpy and
``random`` from ``item_seed`` before reading each item. Worker count, prefetching and interruptions then change
nothing: item ``p`` of epoch ``e`` is always the same image with the same augmentation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, get_worker_info

__all__ = ["ResumableSampler", "SeededItems", "describe_item", "files_being_read", "item_seed", "reading_table"]


def item_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 64-bit seed for the ``position``-th item of ``rank``'s share of ``epoch`` (SeedSequence hashing).

    Args:
        seed: the run's data seed.
        epoch: the epoch.
        rank: the process rank.
        position: the item's position in that rank's share of the epoch.

    Returns:
        ``s0 * 2**31 + s1`` of two hashed 32-bit words: fits 64 bits unsigned, not always 63.
    """
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1 << 31, 1], np.uint64)))


class ResumableSampler(DistributedSampler):
    """Wraps a per-epoch deterministic sampler; yields ``(index, item_seed)`` and can skip a finished prefix.

    A ``DistributedSampler`` subclass so that Lightning neither replaces nor re-wraps it under DDP: ``inner`` already
    shards by rank (``DistributedSampler``, :class:`~contrastseg.data.RepeatFactorSampler`).

    Args:
        inner: a sampler whose order depends only on its ``set_epoch`` value.
        seed: base of the per-item augmentation seeds.
        rank: this process's rank (part of the item seeds, so ranks augment differently).
        epoch_fn: where the epoch comes from when an iteration starts (the trainer's ``current_epoch``); ``None``
            uses the last :meth:`set_epoch`. Lightning's own ``set_epoch`` calls count one epoch too many after a
            resume (its ``epoch_progress.processed``), so the data module passes the trainer's epoch.
    """

    def __init__(self, inner: Any, *, seed: int = 0, rank: int = 0, epoch_fn: Callable[[], int | None] | None = None
                 ) -> None:
        self.inner, self.seed, self.rank, self.epoch_fn = inner, int(seed), int(rank), epoch_fn
        self.epoch = int(getattr(inner, "epoch", 0))
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, items_done: int) -> None:
        """The next iteration is ``epoch`` without its first ``items_done`` items (this process's share)."""
        self._resume = (int(epoch), int(items_done))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self._resume is not None:
            (self.epoch, start), self._resume = self._resume, None
        else:
            current = self.epoch_fn() if self.epoch_fn is not None else None
            self.epoch, start = (self.epoch if current is None else int(current)), 0
        self.inner.set_epoch(self.epoch)
        order = list(self.inner)
        for position in range(start, len(order)):
            yield order[position], item_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return len(self.inner)


@contextmanager
def _seeded(seed: int, *, restore: bool) -> Iterator[None]:
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate()) if restore else None
    torch.default_generator.manual_seed(seed)  # the CPU stream only: torch.manual_seed would reseed every GPU too
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        if states is not None:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])


def reading_table(num_workers: int) -> torch.Tensor | None:
    """A shared-memory table with one 256-byte row per loader worker (``None`` without workers)."""
    return torch.zeros((num_workers, 256), dtype=torch.uint8).share_memory_() if num_workers > 0 else None


def files_being_read(table: torch.Tensor | None) -> list[str]:
    """The non-empty rows of a :func:`reading_table`, decoded."""
    if table is None:
        return []
    rows = [bytes(row.tolist()).rstrip(b"\0").decode(errors="replace") for row in table]
    return [r for r in rows if r]


def describe_item(dataset: Any, index: int) -> str:
    """The file behind ``dataset[index]`` (image path of a :class:`SegmentationDataset`), else ``Type[index]``."""
    pairs = getattr(dataset, "pairs", None)
    if pairs is not None and 0 <= index < len(pairs):
        return str(pairs[index][0])
    return f"{type(dataset).__name__}[{index}]"


def _write_row(row: torch.Tensor, text: str) -> None:
    """``text`` into a reading-table row, zero-padded (its end if too long: the informative part of a path)."""
    data = text.encode()[-row.shape[0]:]
    row.zero_()
    if data:
        row[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)


class SeededItems(Dataset):
    """What the data modules' loaders read: ``dataset[index]``, seeded and tracked.

    Keys ``(index, item_seed)`` (from :class:`ResumableSampler`) are read under ``item_seed``, so the item's
    augmentation is a function of the seed alone; in the main process (``num_workers=0``) the global random states
    are restored afterwards, so loading data never shifts the training step's own random draws (dropout, anchor
    sampling). Plain integer keys are read as they are.

    With ``reading`` (a shared ``(num_workers, 256)`` uint8 tensor) each worker writes the file it is reading into
    its row and clears it when done, so the main process can name the file when a worker dies mid-read.
    """

    def __init__(self, dataset: Dataset, reading: torch.Tensor | None = None) -> None:
        self.dataset, self.reading = dataset, reading

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        index, seed = key if isinstance(key, tuple) else (key, None)
        info = get_worker_info()  # once per item: None in the main process
        row = self.reading[info.id] if self.reading is not None and info is not None and info.id < len(
            self.reading) else None
        if row is not None:
            _write_row(row, describe_item(self.dataset, index))
        try:
            if seed is None:
                return self.dataset[index]
            with _seeded(seed, restore=info is None):
                return self.dataset[index]
        finally:
            if row is not None:
                row.zero_()

    def __getattr__(self, name: str) -> Any:  # dataset facts (class_names, files, ...) stay reachable
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
