"""The shared data-module base: loaders, worker settings and the dataset facts the model is linked to."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from contrastseg._compat import batches_processed
from contrastseg.data.resumable import ResumableSampler, SeededItems, files_being_read, reading_table
from contrastseg.errors import ConfigError, DataError

__all__ = ["EvalDistributedSampler", "SegmentationDataModule", "check_mask_values"]


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_index: int, source: str) -> None:
    """Raise :class:`~contrastseg.errors.DataError` naming the value and ``source`` if ``mask`` holds a label
    outside the classes."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = sorted(set(np.unique(mask[bad]).tolist()))
        raise DataError(
            f"label value {values[0]} in {source} is outside 0..{num_classes - 1} (ignore {ignore_index}); "
            f"all unexpected values: {values[:10]}. Check num_classes or the label mapping"
        )


def spread_seed(seed: int) -> int:
    """A hashed 31-bit seed: ``spread_seed(s) + epoch`` runs never meet for neighbouring ``s`` (SeedSequence)."""
    return int(np.random.SeedSequence([seed, 0x0DA7A]).generate_state(1, np.uint32)[0] >> 1)


class EvalDistributedSampler(DistributedSampler):
    """Process ``rank``'s share of an evaluation split, every item exactly once over all processes: items
    ``rank, rank + world, ...``, without the padding ``DistributedSampler`` adds (duplicates would be scored twice).

    A ``DistributedSampler`` subclass, so Lightning keeps it instead of injecting its own. Processes may get one
    item fewer than others; metrics are summed over processes at the epoch's end, which needs no equal counts.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class SegmentationDataModule(LightningDataModule):
    """Base class of the data modules: datasets, loaders, training order, and the class facts linked to the model.

    Subclasses fill ``self.datasets`` in :meth:`setup` and set the class facts in ``__init__``.

    The CLI links ``num_classes``, ``ignore_index`` and ``class_names`` from the data module into the model, so
    they must be known right after construction.

    Args:
        batch_size: images per batch per process (per GPU under DDP).
        val_batch_size: images per validation/test batch (``None``: same as ``batch_size``).
        num_workers: loader worker processes.
        pin_memory: pin host memory for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
        seed: seed of the training order and of the per-item augmentation (see
            ``contrastseg.data.resumable``); ``None``: the run's ``seed_everything`` (so seeds of a sweep
            differ in data order too), or 0 without one.
    """

    num_classes: int
    ignore_index: int = 255
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None = None
    class_groups: dict[str, tuple[int, ...]] = {}  # noqa: RUF012 - read-only default; metrics per group

    def __init__(
        self, *, batch_size: int = 8, val_batch_size: int | None = None, num_workers: int = 2,
        pin_memory: bool = True, persistent_workers: bool = True, seed: int | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed
        self._resume: dict[str, int] = {}
        self._train_sampler: ResumableSampler | None = None
        self._reading: dict[str, torch.Tensor | None] = {}  # per split: what each loader worker is reading
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()  # pinning without a GPU only warns
        self.persistent_workers = persistent_workers and num_workers > 0
        self.datasets: dict[str, Dataset] = {}

    _STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}

    def make_dataset(self, split: str, transform: Any = None) -> Dataset:  # pragma: no cover - abstract
        """The dataset behind loader key ``split`` (``train``/``val``/``test``); subclasses implement it."""
        raise NotImplementedError

    def train_transform(self) -> Any:
        """The augmentation of the training split (``None``: none)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs, once each."""
        for key in self._STAGE_SPLITS.get(stage or "fit", ("train", "val", "test")):
            if key not in self.datasets:
                self.datasets[key] = self.make_dataset(key, self.train_transform() if key == "train" else None)

    def _dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            raise DataError(f"{type(self).__name__} has no {split!r} split (available: {sorted(self.datasets)})")
        return self.datasets[split]

    def _tracked(self, split: str) -> SeededItems:
        self._reading[split] = reading_table(self.num_workers)
        return SeededItems(self._dataset(split), self._reading[split])

    def on_exception(self, exception: BaseException) -> None:
        """Name the file a loader worker was reading when it died (PyTorch reports only the worker's pid)."""
        # PyTorch reports a dead worker as a RuntimeError, or first as a broken pipe to it, depending on the race.
        died = isinstance(exception, RuntimeError) and "DataLoader worker" in str(exception)
        if not (died or isinstance(exception, (ConnectionError, EOFError))):
            return
        files = [f"{f} ({split})" for split, table in self._reading.items() for f in files_being_read(table)]
        message = (f"a data loader worker died while reading {', '.join(files)}" if files else
                   "a data loader worker died, not while reading an item (in collation or at start-up)")
        message += "; a crash in an image decoder or running out of memory are the usual causes"
        print(f"contrastseg: error: {message}", file=sys.stderr)
        if hasattr(exception, "add_note"):  # Python 3.11+: shown with the traceback
            exception.add_note(message)

    def _loader(self, split: str) -> DataLoader:
        # Under DDP every image of an evaluation split is scored exactly once: Lightning's DistributedSampler would
        # pad the split to a multiple of the world size, and the padded duplicates would enter the confusion matrix.
        # An own generator: creating a loader iterator draws worker seeds from it, never from the global RNG
        # that the training step uses (so a resumed run's random streams match an uninterrupted one's).
        dataset = self._tracked(split)
        world, rank = self._world()
        if 1 < world and len(dataset) < world:  # a process without a batch would stop Lightning's evaluation loop
            raise DataError(f"the {split} split has {len(dataset)} image(s), fewer than the {world} processes: "
                            "evaluate it with --trainer.devices=1")
        sampler = EvalDistributedSampler(dataset, num_replicas=world, rank=rank) if world > 1 else None
        return DataLoader(
            dataset, batch_size=self.val_batch_size, shuffle=False, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers, generator=torch.Generator(),
        )

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        return (torch.distributed.get_world_size(), torch.distributed.get_rank()) if initialized else (1, 0)

    def _current_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    @property
    def order_seed(self) -> int:
        """``seed``, else the ``seed_everything`` of the run (Lightning's ``PL_GLOBAL_SEED``), else 0."""
        return int(self.seed if self.seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def train_sampler(self, dataset: Dataset, num_replicas: int, rank: int) -> Any:
        """This process's share of each epoch, a function of ``set_epoch`` only (override for other orders).

        ``DistributedSampler`` shuffles with ``seed + epoch``, so seeds ``s`` and ``s + 1`` would see the same
        orders one epoch apart (a sweep's seeds would share most of their data order); it gets a hashed seed."""
        return DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                                  seed=spread_seed(self.order_seed))

    def train_dataloader(self) -> DataLoader:
        """Shuffled, seeded per epoch, augmentation seeded per item; resumes mid-epoch (see :meth:`state_dict`)."""
        dataset = self._dataset("train")
        world, rank = self._world()
        sampler = ResumableSampler(self.train_sampler(dataset, world, rank), seed=self.order_seed, rank=rank,
                                   epoch_fn=self._current_epoch)
        if len(sampler.inner) < self.batch_size:  # drop_last: not one batch, and Lightning would exit as if done
            share = f" ({len(sampler.inner)} per process on {world})" if world > 1 else ""
            raise DataError(f"the train split has {len(dataset)} images{share}, fewer than one batch of "
                            f"{self.batch_size}: nothing would be trained. Lower data.init_args.batch_size or add "
                            "images")
        self._train_sampler = sampler
        if self._resume:
            epoch, done = self._resume["epoch"], self._resume["items_done"]
            sampler.inner.set_epoch(epoch)
            if done + self.batch_size > len(sampler.inner):  # no full batch left (drop_last): the next epoch
                epoch, done = epoch + 1, 0
            sampler.resume(epoch, done)
            self._resume = {}
        return DataLoader(
            self._tracked("train"), batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
            generator=torch.Generator(),
        )

    def state_dict(self) -> dict[str, Any]:
        """Where training is in the data: the epoch and how many of this process's items it has trained on."""
        trainer, sampler = getattr(self, "trainer", None), getattr(self, "_train_sampler", None)
        if trainer is None or sampler is None:
            return {}
        # The sampler's epoch is the one whose data the batch counter refers to (trainer.current_epoch already
        # moves on when an epoch ends); the counter holds the batches whose optimisation step has run.
        done = batches_processed(trainer)
        return {"epoch": sampler.epoch, "items_done": int(done) * self.batch_size, "batch_size": self.batch_size,
                "world_size": int(trainer.world_size)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Applied by the next :meth:`train_dataloader`: the resumed epoch skips the items already trained on.

        Raises:
            ConfigError: the checkpoint was saved inside an epoch with another batch size or number of processes,
                whose remaining batches this run cannot replay (at an epoch's end a warning names both).
        """
        self._resume = {k: int(v) for k, v in state_dict.items() if k in ("epoch", "items_done")}
        saved = (int(state_dict.get("batch_size", self.batch_size)), int(state_dict.get("world_size", 0)))
        world = self._world()[0]
        now = (self.batch_size, world if saved[1] else 0)  # checkpoints without the process count: not compared
        if saved == now or not self._resume:
            return
        what = (f"the checkpoint was trained with data.init_args.batch_size={saved[0]} on {saved[1] or '?'} "
                f"process(es), this run has batch_size={self.batch_size} on {world}")
        done = self._resume.get("items_done", 0)
        if done and "train" in self.datasets:  # an epoch whose last full batch was trained is finished
            share = len(self.train_sampler(self.datasets["train"], max(saved[1], 1), 0))
            done = 0 if done + saved[0] > share else done
        if done:
            raise ConfigError(f"{what}, and it was saved {done} items into epoch {self._resume['epoch']}: the rest "
                              "of that epoch cannot be replayed with other batches. Resume with the same batch size "
                              "and number of processes, or from a checkpoint saved at an epoch's end")
        rank_zero_warn(f"{what}: the next epoch starts with the new batches, so steps and the learning-rate "
                       "schedule no longer match an uninterrupted run")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.datasets else "val")

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    @staticmethod
    def _names(class_names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
        return tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
