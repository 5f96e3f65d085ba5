"""A run's validation history from its ``metrics.csv``, and the scores of several runs at equal epochs or at equal
training time.

Every validation of a run is a row of ``metrics.csv`` holding ``val/mIoU``, ``val/IoU_<class>``,
``val/mIoU_<group>`` and, with :class:`~contrastseg.callbacks.TrainClock`, ``time/train_s``: the seconds the run
had trained when it validated. Scores here drop the stage prefix: ``mIoU``, ``IoU_<class>``, ``mIoU_<group>``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Validation", "equal_epoch", "equal_time", "metric_order", "read_validations", "scores_from_json"]

TIME_KEY = "time/train_s"


@dataclass(frozen=True)
class Validation:
    """One validation of a run.

    Attributes:
        epoch: the epoch it ended (from 0).
        step: the optimiser step.
        train_s: training seconds so far (``None`` without :class:`~contrastseg.callbacks.TrainClock`).
        scores: ``mIoU``, ``IoU_<class>``, ``mIoU_<group>`` (classes absent from labels and predictions left out).
    """

    epoch: int
    step: int
    train_s: float | None
    scores: dict[str, float]


def read_validations(metrics_csv: Path, *, stage: str = "val") -> list[Validation]:
    """Every row of a ``metrics.csv`` with ``<stage>/mIoU``, in the order logged.

    Raises:
        FileNotFoundError: no such file.
    """
    out = []
    with Path(metrics_csv).open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get(f"{stage}/mIoU"):
                continue
            scores = {k.split("/", 1)[1]: float(v) for k, v in row.items()
                      if k.startswith(f"{stage}/") and v and k.split("/", 1)[1].startswith(("mIoU", "IoU_"))}
            seconds = row.get(TIME_KEY)
            out.append(Validation(int(row["epoch"]), int(row["step"]), float(seconds) if seconds else None, scores))
    return out


def scores_from_json(path: Path) -> dict[str, float]:
    """The scores of a ``<stage>_metrics.json`` (written by every evaluation) under the same keys as above."""
    data = json.loads(Path(path).read_text())
    scores = {"mIoU": data["mIoU"]} if data.get("mIoU") is not None else {}
    scores |= {f"mIoU_{g}": v for g, v in (data.get("group_mIoU") or {}).items() if v is not None}
    scores |= {f"IoU_{c['class']}": c["iou"] for c in data.get("per_class") or [] if c.get("iou") is not None}
    return scores


def metric_order(keys: set[str], run_dir: Path | None = None) -> list[str]:
    """``mIoU``, then the groups, then the classes; groups and classes in the data module's order where a
    ``val_metrics.json`` or ``test_metrics.json`` in ``run_dir`` gives it, else alphabetically."""
    order: list[str] = []
    for name in ("val_metrics.json", "test_metrics.json"):
        if run_dir is not None and (run_dir / name).is_file():
            data = json.loads((run_dir / name).read_text())
            order = [f"mIoU_{g}" for g in data.get("group_mIoU") or {}]
            order += [f"IoU_{c['class']}" for c in data.get("per_class") or []]
            break

    def rank(key: str) -> tuple[int, int, str]:
        kind = 0 if key == "mIoU" else 1 if key.startswith("mIoU_") else 2
        return kind, order.index(key) if key in order else len(order), key

    return sorted(keys, key=rank)


def equal_epoch(histories: Mapping[str, Sequence[Validation]]) -> tuple[int, dict[str, Validation]]:
    """The last epoch every run validated, and each run's (last) validation of that epoch.

    Args:
        histories: per run name, its validations.

    Raises:
        ValueError: no epoch was validated by every run (the message lists each run's epochs).
    """
    epochs = {name: {v.epoch: v for v in history} for name, history in histories.items()}
    common = set.intersection(*(set(e) for e in epochs.values())) if epochs else set()
    if not common:
        listed = "; ".join(f"{n}: {sorted(e) or 'none'}" for n, e in epochs.items())
        raise ValueError(f"no epoch was validated by every run (epochs validated, from 0: {listed})")
    epoch = max(common)
    return epoch, {name: e[epoch] for name, e in epochs.items()}


def equal_time(a: Sequence[Validation], b: Sequence[Validation]) -> tuple[float, Validation, Validation]:
    """Two runs of one seed at equal training time.

    ``T`` is the smaller of the two runs' training times at their last validation; each run is scored at its last
    validation with ``train_s <= T`` (the run that trained less, at its last validation).

    Returns:
        ``T`` and the two validations.

    Raises:
        ValueError: a run logged no training time, or validated only after ``T``.
    """
    timed = []
    for history in (a, b):
        kept = [v for v in history if v.train_s is not None]
        if not kept:
            raise ValueError(f"no {TIME_KEY} in its metrics.csv" if history else "no validation")
        timed.append(kept)
    budget = min(max(v.train_s for v in kept) for kept in timed)  # type: ignore[type-var]
    picked = []
    for kept in timed:
        within = [v for v in kept if v.train_s <= budget]  # type: ignore[operator]
        if not within:
            raise ValueError(f"a run validated first after {kept[0].train_s:.1f} s, beyond T = {budget:.1f} s")
        picked.append(within[-1])
    return budget, picked[0], picked[1]
