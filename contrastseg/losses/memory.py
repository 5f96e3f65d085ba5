"""Class-wise FIFO memory of detached embeddings: the contrast set that pixel contrast [36] and region contrast
[15] add to a batch.

One ring buffer of ``size`` entries per class, stored in module buffers (``entries``, ``head``, ``count``), so that
a checkpoint holds the memory and ``--ckpt_path last`` resumes it exactly. :meth:`ClassMemory.push` appends rows in
arrival order; a class that receives more than ``size`` rows in one push keeps its newest ``size``. The ring never
overwrites an entry newer than the one it replaces: slot ``head`` always holds the oldest entry of a full class.
(The reference implementation's pixel queue advanced its pointer by one instead of by the rows written, and wrote
a full chunk at the end of the queue when it did not fit, so a step overwrote the entries of the step before.)

Under DDP :meth:`ClassMemory.push` gathers the rows of every process first (in rank order), so every process
applies the same update and holds the same memory; a process with nothing to add still takes part.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["ClassMemory", "all_gather_rows"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_rows(rows: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Rows and labels of every process, concatenated in rank order (a different count per process is fine).

    Args:
        rows: ``(n, D)`` this process's rows (no gradient flows through the gather).
        labels: ``(n,)`` their classes.

    Returns:
        ``(sum n, D)`` and ``(sum n,)``; the inputs themselves without a process group.
    """
    world = _world_size()
    if world == 1:
        return rows, labels
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    longest = max(1, max(sizes))  # never an empty tensor in the collective
    padded = rows.new_zeros(longest, rows.shape[1])
    padded[: rows.shape[0]] = rows
    padded_labels = labels.new_zeros(longest)
    padded_labels[: labels.shape[0]] = labels
    all_rows = [torch.empty_like(padded) for _ in range(world)]
    all_labels = [torch.empty_like(padded_labels) for _ in range(world)]
    dist.all_gather(all_rows, padded)
    dist.all_gather(all_labels, padded_labels)
    return (torch.cat([r[:n] for r, n in zip(all_rows, sizes)]),  # world x (longest, D) -> (sum n, D)
            torch.cat([y[:n] for y, n in zip(all_labels, sizes)]))


class ClassMemory(nn.Module):
    """Per-class FIFO ring buffers of detached embeddings.

    Args:
        num_classes: number of classes ``C`` (labels ``0..C-1``).
        size: entries per class (5000 in [36]).
        dim: embedding dimension ``D``.

    Buffers:
        entries: ``(C, size, D)`` float32 rows; only the filled slots are meaningful.
        head: ``(C,)`` the slot the next row of each class is written to.
        count: ``(C,)`` filled slots per class (at most ``size``).
    """

    def __init__(self, *, num_classes: int, size: int, dim: int) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("size", size), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_classes, self.size, self.dim = num_classes, size, dim
        self.register_buffer("entries", torch.zeros(num_classes, size, dim))
        self.register_buffer("head", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, size={self.size}, dim={self.dim}"

    @torch.no_grad()
    def push(self, rows: Tensor, labels: Tensor, *, gather: bool = True) -> None:
        """Append rows to their classes' queues (from every process under DDP when ``gather``).

        Args:
            rows: ``(n, D)`` embeddings (stored detached, in float32, as given: normalise them first if the memory
                should hold unit rows).
            labels: ``(n,)`` classes in ``0..C-1``.
            gather: all-gather the rows of every process first (every process must call ``push`` then).

        Raises:
            ValueError: wrong shapes or a label outside ``0..C-1`` (checked before anything is written).
        """
        if rows.dim() != 2 or rows.shape[1] != self.dim or labels.shape != rows.shape[:1]:
            raise ValueError(f"push takes rows (n, {self.dim}) and labels (n,), got {tuple(rows.shape)} and "
                             f"{tuple(labels.shape)}")
        rows, labels = rows.detach().float(), labels.long()
        if gather:
            rows, labels = all_gather_rows(rows, labels)
        if labels.numel() == 0:
            return
        low, high = int(labels.min()), int(labels.max())  # one sync per step, for a one-line error
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"memory label {low if low < 0 else high} is outside the classes 0..{self.num_classes - 1}")
        order = torch.sort(labels, stable=True).indices  # class-major, arrival order within a class
        rows, labels = rows[order], labels[order]
        per_class = torch.bincount(labels, minlength=self.num_classes)  # (C,)
        first = torch.cumsum(per_class, 0) - per_class  # (C,) position of each class's first row
        rank = torch.arange(labels.numel(), device=labels.device) - first[labels]  # (n,) arrival rank in its class
        kept = rank >= per_class[labels] - self.size  # only the newest `size` rows of a class survive this push
        slot = (self.head[labels] + rank) % self.size  # (n,) distinct among the kept rows of a class
        self.entries[labels[kept], slot[kept]] = rows[kept]
        self.head.add_(per_class).remainder_(self.size)
        self.count.add_(per_class).clamp_(max=self.size)

    def slots(self) -> Tensor:
        """``(C, size)`` mask of the filled slots."""
        oldest = (self.head - self.count) % self.size  # (C,)
        age = (torch.arange(self.size, device=self.head.device)[None, :] - oldest[:, None]) % self.size  # (C, size)
        return age < self.count[:, None]

    def contents(self) -> tuple[Tensor, Tensor]:
        """Every stored entry and its class: ``(M, D)`` and ``(M,)``, class-major.

        Once every queue is full (the steady state) the rows are a view of ``entries``, not a copy: a :meth:`push`
        before the backward pass of a loss computed on them then fails autograd's in-place check (the terms push
        in :meth:`~contrastseg.losses.LossTerm.after_backward`, after it).
        """
        classes = torch.arange(self.num_classes, device=self.entries.device)[:, None].expand(-1, self.size)
        if bool((self.count == self.size).all()):  # one small host read; saves copying the memory every step
            return self.entries.reshape(-1, self.dim), classes.reshape(-1)  # (C, size, D) -> (C*size, D), a view
        filled = self.slots()  # (C, size)
        return self.entries[filled], classes[filled]  # (C, size, D)[mask] -> (M, D)

    def queue(self, cls: int) -> Tensor:
        """Class ``cls``'s entries from the oldest to the newest: ``(count, D)``."""
        oldest = int((self.head[cls] - self.count[cls]) % self.size)
        order = (oldest + torch.arange(int(self.count[cls]), device=self.entries.device)) % self.size
        return self.entries[cls, order]

    def reset(self) -> None:
        """Empty every queue."""
        self.entries.zero_()
        self.head.zero_()
        self.count.zero_()
