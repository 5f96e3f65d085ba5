"""ClassMemory against a plain Python model of per-class FIFO queues; DDP and checkpoint round trips."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from contrastseg.losses.memory import ClassMemory

from . import memory_worker
from .test_distributed import _spawn


class ListMemory:
    """The obviously correct model: one ``deque(maxlen=size)`` of rows per class, appended in arrival order."""

    def __init__(self, num_classes: int, size: int) -> None:
        self.queues = [deque(maxlen=size) for _ in range(num_classes)]

    def push(self, rows: torch.Tensor, labels: torch.Tensor) -> None:
        for row, label in zip(rows, labels.tolist()):
            self.queues[label].append(row.clone())


def _assert_same(memory: ClassMemory, model: ListMemory) -> None:
    for cls, queue in enumerate(model.queues):
        got = memory.queue(cls)
        assert got.shape[0] == len(queue) == int(memory.count[cls])
        if queue:
            torch.testing.assert_close(got, torch.stack(list(queue)), rtol=0, atol=0)
    entries, classes = memory.contents()
    assert entries.shape[0] == sum(len(q) for q in model.queues)
    for cls, queue in enumerate(model.queues):  # contents() holds the same rows (in slot order)
        mine = entries[classes == cls]
        assert mine.shape[0] == len(queue)
        if queue:
            expected = torch.stack(list(queue))
            assert torch.equal(mine.sort(dim=0).values, expected.sort(dim=0).values)


@pytest.mark.parametrize("size", [1, 3, 7])
def test_push_matches_the_list_model_through_many_wraps(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    memory, model = ClassMemory(num_classes=4, size=size, dim=3), ListMemory(4, size)
    counter = 0
    for step in range(40):
        n = int(torch.randint(0, 12, (1,), generator=g))  # sometimes empty, sometimes more than `size` for a class
        labels = torch.randint(0, 4 if step % 5 else 1, (n,), generator=g)  # every 5th step: one class only
        rows = (counter + torch.arange(n, dtype=torch.float32))[:, None].expand(n, 3) * torch.tensor([1.0, -1, 2])
        counter += n
        memory.push(rows, labels)
        model.push(rows, labels)
        _assert_same(memory, model)


def test_a_full_queue_replaces_its_oldest_entries_never_its_newest() -> None:
    memory = ClassMemory(num_classes=1, size=5, dim=1)
    for start in (0, 3, 6):  # the reference code's queue wrote 3 rows but advanced its pointer by 1
        memory.push(torch.arange(start, start + 3, dtype=torch.float32)[:, None], torch.zeros(3, dtype=torch.long))
    assert memory.queue(0)[:, 0].tolist() == [4, 5, 6, 7, 8]


def test_bad_input_is_a_one_line_error() -> None:
    memory = ClassMemory(num_classes=3, size=4, dim=2)
    with pytest.raises(ValueError, match="label 3 is outside the classes 0..2"):
        memory.push(torch.zeros(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="label -1"):
        memory.push(torch.zeros(1, 2), torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"rows \(n, 2\)"):
        memory.push(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="size must be a positive integer"):
        ClassMemory(num_classes=3, size=0, dim=2)
    assert int(memory.count.sum()) == 0  # nothing written by a rejected push


def test_the_state_dict_restores_the_memory_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    memory = ClassMemory(num_classes=3, size=4, dim=2)
    for _ in range(5):
        memory.push(torch.randn(6, 2, generator=g), torch.randint(0, 3, (6,), generator=g))
    restored = ClassMemory(num_classes=3, size=4, dim=2)
    restored.load_state_dict(memory.state_dict())
    rows, labels = torch.randn(9, 2, generator=g), torch.randint(0, 3, (9,), generator=g)
    memory.push(rows, labels)
    restored.push(rows, labels)  # and it continues where the original is
    for name in ("entries", "head", "count"):
        assert torch.equal(getattr(memory, name), getattr(restored, name))


def test_rows_are_stored_detached_in_float32() -> None:
    memory = ClassMemory(num_classes=2, size=3, dim=2)
    rows = torch.ones(2, 2, dtype=torch.bfloat16, requires_grad=True)
    memory.push(rows, torch.tensor([0, 1]))
    entries, _ = memory.contents()
    assert entries.dtype == torch.float32 and not entries.requires_grad


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_process_holds_the_same_memory_under_ddp(tmp_path) -> None:
    _spawn(memory_worker.push_steps, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in ("entries", "head", "count"):
        assert torch.equal(ranks[0][name], ranks[1][name])
    single = ClassMemory(num_classes=memory_worker.CLASSES, size=memory_worker.SIZE, dim=memory_worker.DIM)
    for step in range(memory_worker.STEPS):  # one process pushing rank 0's rows, then rank 1's, every step
        batches = [memory_worker.rows_of(rank, step) for rank in range(2)]
        single.push(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    assert torch.equal(ranks[0]["entries"], single.entries)


def test_a_full_memory_is_read_without_a_copy() -> None:
    memory = ClassMemory(num_classes=2, size=3, dim=2)
    memory.push(torch.randn(4, 2), torch.tensor([0, 0, 0, 1]))
    assert memory.contents()[0].shape[0] == 4  # not full: the filled slots only
    memory.push(torch.randn(2, 2), torch.tensor([1, 1]))
    rows, classes = memory.contents()
    assert rows.data_ptr() == memory.entries.data_ptr() and classes.tolist() == [0, 0, 0, 1, 1, 1]
