"""Shared measurement helpers of the benchmark scripts: median time, peak extra memory, fresh processes."""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def timed(step: Callable[[], Any], device: str, repeats: int, *, warmup: int = 1,
          before: Callable[[], Any] | None = None, consecutive: int = 1) -> tuple[float, float]:
    """Median seconds of ``step`` over ``repeats`` and the peak memory (MiB) it adds above the state before.

    CUDA: ``max_memory_allocated`` above the allocation before timing. CPU: peak resident-set growth of this
    process, so call it in a fresh process (:func:`in_fresh_process`) for a number that is the step's own.
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
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[1]) * resource.getpagesize()
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
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
    return statistics.median(times), max(peak, 0) / 2**20


def _child(target: Callable[..., Any], args: tuple, queue: Any) -> None:
    try:
        queue.put(target(*args))
    except Exception as err:  # report, don't hang the parent
        queue.put(err)


def in_fresh_process(target: Callable[..., Any], *args: Any) -> Any:
    """``target(*args)`` in a new (spawned) process; its exceptions are re-raised here."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, Exception):
        raise result
    return result
