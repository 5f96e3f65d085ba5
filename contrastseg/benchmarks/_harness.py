"""Shared measurement helpers of the benchmark scripts: median time, peak extra memory, fresh processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from unittest.mock import patch

import torch


def timed(step: Callable[[], Any], device: str, repeats: int, *, warmup: int = 1,
          before: Callable[[], Any] | None = None, consecutive: int = 1) -> tuple[float, float]:
    """Median seconds of ``step`` over ``repeats`` and the peak memory (MiB) it adds above the state before.

    CUDA: ``max_memory_allocated`` above the allocation before timing. CPU: peak resident-set growth of this
    process over the timed steps (the peak is reset after the warm-up), which is the step's own only when freed
    memory goes back to the system: measure it with :func:`cpu_time_and_memory`.
    ``consecutive``: each repeat times that many steps back to back (the device is synchronised around them, not
    between them) and counts their mean, as in a training loop, where the host queues the next step while the
    device still runs the last one and a host synchronisation inside a step costs that overlap.
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    if before is not None:
        before()  # e.g. drop the warm-up's gradients, so that the peak below counts the step's own allocations
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        base = _status_kib("VmRSS") * 1024
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        sync()
        t0 = time.perf_counter()
        for _ in range(consecutive):
            step()
        sync()
        times.append((time.perf_counter() - t0) / consecutive)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _status_kib("VmHWM") * 1024) - base
    return statistics.median(times), max(peak, 0) / 2**20


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (kiB): ``VmRSS`` now, ``VmHWM`` its peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> None:
    """Make ``VmHWM`` start again from the current resident set (Linux 4.0+), so the warm-up's peak is not it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# glibc keeps freed blocks below an adaptive threshold (up to 32 MiB) for reuse, so a process's resident set
# holds what earlier steps freed and a step's growth is undercounted by a different amount each run. With
# these, every block above 64 KiB is mapped and returned on free: resident-set growth is the step's own. They
# slow a step 1.5-3.5x, so time is measured in another process.
EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def cpu_time_and_memory(target: Callable[..., tuple], *args: Any, repeats: int, **kwargs: Any) -> tuple:
    """``target(*args, repeats=repeats, **kwargs)`` for the time (its first element) and the same with one repeat
    under :data:`EXACT_MALLOC` for the memory (the rest), each in a fresh process: ``(time, *memory)``."""
    timing = in_fresh_process(partial(target, repeats=repeats, **kwargs), *args)
    memory = in_fresh_process(partial(target, repeats=1, **kwargs), *args, env=EXACT_MALLOC)
    return (timing[0], *memory[1:])


def _child(target: Callable[..., Any], args: tuple, queue: Any) -> None:
    try:
        queue.put(target(*args))
    except Exception as err:  # report, don't hang the parent
        queue.put(err)


def in_fresh_process(target: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> Any:
    """``target(*args)`` in a new (spawned) process, with ``env`` added to its environment; its exceptions are
    re-raised here."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    with patch.dict(os.environ, env or {}):  # the spawned interpreter inherits it (glibc reads these at start)
        proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, Exception):
        raise result
    return result
