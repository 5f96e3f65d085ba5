"""Run a sweep's jobs as processes, some at a time; stop them all at a deadline or when one fails.

Each job is a command (``contrastseg fit ...``) with its own log file. At the deadline every running job gets
SIGTERM at once (a ``contrastseg fit`` then saves ``last.ckpt``, flushes its logs and exits) and the jobs not yet
started are dropped. A job that fails on its own stops the sweep: the others are terminated, so a failed sweep
leaves nothing training on the GPU.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastseg.errors import ContrastSegError

__all__ = ["Job", "JobFailed", "log_tail", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """One process of a sweep.

    Attributes:
        name: unique within the sweep; the log is ``<out>/<name>.log``.
        command: the command line.
        label: how messages name the job (``"CE, seed 0"``).
    """

    name: str
    command: Sequence[str]
    label: str


class JobFailed(ContrastSegError):
    """A job exited with an error; the message names it, its exit status and its log file."""

    def __init__(self, job: Job, returncode: int, log: Path) -> None:
        super().__init__(f"{job.label} ({job.name}) failed with exit status {returncode}; its log: {log}")
        self.job, self.returncode, self.log = job, returncode, log


def log_tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a log file (empty if it does not exist)."""
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def run_jobs(
    jobs: Sequence[Job], out: Path, *, parallel: int = 1, deadline_s: float | None = None, cwd: Path | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 1.0,
) -> list[dict[str, Any]]:
    """Run ``jobs`` in order, ``parallel`` at a time, stopping all of them ``deadline_s`` after the start.

    Args:
        jobs: the jobs, in the order they start.
        out: folder of the log files (created).
        parallel: jobs running at the same time.
        deadline_s: seconds after which running jobs get SIGTERM and pending jobs are dropped (``None``: none).
        cwd: working directory of the jobs (``None``: this one).
        on_record: called with each job's record as it ends (e.g. to save the records so far).
        poll_s: seconds between checks of the running jobs.

    Returns:
        One record per job that ran, in the order they ended: ``name``, ``returncode``, ``stopped`` (stopped at
        the deadline) and ``wall_s``.

    Raises:
        JobFailed: a job exited with an error before the deadline; the running jobs were terminated first.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, got {parallel}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pending, running, records = list(jobs), {}, []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                log = (out / f"{job.name}.log").open("w")
                proc = subprocess.Popen(list(job.command), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
                running[proc] = (job, time.perf_counter(), log)
            late = deadline_s is not None and time.perf_counter() - start > deadline_s
            stopped = {proc for proc in running if late and proc.poll() is None}
            for proc in stopped:
                proc.send_signal(signal.SIGTERM)  # all at once: each saves last.ckpt and flushes its logs
            for proc in list(running):
                if not late and proc.poll() is None:
                    continue
                code = _wait(proc)
                job, began, log = running.pop(proc)
                log.close()
                record = {"name": job.name, "returncode": code, "stopped": proc in stopped,
                          "wall_s": round(time.perf_counter() - began, 3)}
                records.append(record)
                if on_record is not None:
                    on_record(record)
                if code != 0 and proc not in stopped:
                    raise JobFailed(job, code, out / f"{job.name}.log")
            if late:
                pending.clear()
            elif running:
                time.sleep(poll_s)
    finally:  # a failed job (or Ctrl-C) must not leave the others running
        for proc, (_, _, log) in running.items():
            proc.terminate()
            _wait(proc)
            log.close()
    return records


def _wait(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Exit status of ``proc``, killed if it has not ended ``timeout`` seconds after being asked to."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
