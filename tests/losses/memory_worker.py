"""Process body of the two-process memory test (imported by spawned children, so no test_ prefix)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from contrastseg.losses.memory import ClassMemory

from .ddp_worker import _init

CLASSES, SIZE, DIM, STEPS = 3, 5, 4, 6


def rows_of(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s rows at ``step``: rank 1 has nothing every other step (an all-ignore batch)."""
    g = torch.Generator().manual_seed(100 * step + rank)
    n = 0 if rank == 1 and step % 2 else 2 + step
    return torch.randn(n, DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def push_steps(rank: int, world: int, port: int, out_dir: str) -> None:
    _init(rank, world, port)
    memory = ClassMemory(num_classes=CLASSES, size=SIZE, dim=DIM)
    for step in range(STEPS):
        memory.push(*rows_of(rank, step))
    torch.save({k: v for k, v in memory.state_dict().items()}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
