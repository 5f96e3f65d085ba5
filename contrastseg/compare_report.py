"""Scores and report of ``contrastseg compare``: both arms at equal epochs and at equal training time, per metric
the mean ± std over seeds and the paired difference B - A with its 95 % bootstrap interval.

Only seeds where both arms have a usable run are compared; every run or seed left out is named in a note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contrastseg.errors import ContrastSegError
from contrastseg.evaluation.bootstrap import compare_paired
from contrastseg.evaluation.history import (
    equal_epoch,
    equal_time,
    metric_order,
    read_validations,
    scores_from_json,
)

__all__ = ["RESAMPLES", "score_views", "write_report"]

RESAMPLES, BOOTSTRAP_SEED = 10000, 0


def _pairs(sweep: dict[str, Any], out: Path, notes: list[str]) -> dict[int, dict[str, dict[str, Any]]]:
    """Per seed with both arms usable: arm -> run record, with its ``validations`` read from ``metrics.csv``."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for run in sweep["runs"]:
        if run.get("returncode") not in (0, None) and not run.get("stopped"):
            notes.append(f"{run['name']} failed (exit {run['returncode']}): left out")
            continue
        metrics = out / run["run_dir"] / "metrics.csv" if run.get("run_dir") else None
        run["validations"] = read_validations(metrics) if metrics is not None and metrics.is_file() else []
        if not run["validations"]:
            notes.append(f"{run['name']} never validated: left out")
            continue
        by_seed.setdefault(run["seed"], {})[run["arm"]] = run
    for seed, arms in list(by_seed.items()):
        if len(arms) < 2:
            notes.append(f"seed {seed}: only {next(iter(arms.values()))['name']} has a run: seed left out")
            del by_seed[seed]
    return dict(sorted(by_seed.items()))


def _entry(run: dict[str, Any], validation: Any, scores: dict[str, float]) -> dict[str, Any]:
    return {"arm": run["arm"], "seed": run["seed"], "run": run["name"], "epoch": validation.epoch,
            "train_s": validation.train_s, "scores": scores}


def _stats(entries: list[dict[str, Any]], order_dir: Path | None) -> dict[str, Any]:
    keys = {k for e in entries for k in e["scores"]}
    stats = {}
    for key in metric_order(keys, order_dir):
        per_arm = [{e["seed"]: e["scores"][key] for e in entries if e["arm"] == arm and key in e["scores"]}
                   for arm in ("a", "b")]
        stats[key] = compare_paired(*per_arm, resamples=RESAMPLES, seed=BOOTSTRAP_SEED)
    return stats


def score_views(sweep: dict[str, Any], out: Path, *, budget: str = "both") -> tuple[dict[str, Any], list[str]]:
    """The ``epochs`` and/or ``time`` views of a sweep (``budget``: ``epochs``, ``time`` or ``both``).

    Returns:
        ``({view: {"stage", "scores": [...], "stats": {metric: ...}, ...}}, notes)``.

    Raises:
        ContrastSegError: no seed has both arms, or no epoch was validated by every run.
    """
    notes: list[str] = []
    pairs = _pairs(sweep, out, notes)
    if not pairs:
        raise ContrastSegError(f"no seed has a usable run of both arms in {out} ({'; '.join(notes) or 'no runs'})")
    first = pairs[next(iter(pairs))]["a"]
    order_dir = out / first["run_dir"]
    views: dict[str, Any] = {}
    if budget in ("epochs", "both"):
        try:
            epoch, picked = equal_epoch({r["name"]: r["validations"] for arms in pairs.values() for r in arms.values()})
        except ValueError as err:
            raise ContrastSegError(str(err)) from None
        entries = []
        for arms in pairs.values():
            for run in arms.values():
                scores = picked[run["name"]].scores
                if sweep["stage"] == "test":
                    path = out / run["test_dir"] / "test_metrics.json" if run.get("test_dir") else None
                    if path is None or not path.is_file():
                        notes.append(f"{run['name']} has no test scores (no last.ckpt, or its test failed)")
                        continue
                    scores = scores_from_json(path)
                    entries.append(_entry(run, run["validations"][-1], scores))  # last.ckpt: its last epoch
                else:
                    entries.append(_entry(run, picked[run["name"]], scores))
        stopped = [r["name"] for arms in pairs.values() for r in arms.values() if r.get("stopped")]
        if sweep["stage"] == "test" and stopped:
            notes.append(f"stopped at the deadline: {', '.join(stopped)}; their test scores are from where they "
                         f"stopped, not from epoch {epoch + 1}")
        views["epochs"] = {"stage": sweep["stage"], "epoch": epoch, "scores": entries,
                           "stats": _stats(entries, order_dir)}
    if budget in ("time", "both"):
        entries, budgets = [], {}
        for seed, arms in pairs.items():
            try:
                budgets[seed], va, vb = equal_time(arms["a"]["validations"], arms["b"]["validations"])
            except ValueError as err:
                notes.append(f"seed {seed} left out of the equal-time view: {err}")
                continue
            entries += [_entry(arms["a"], va, va.scores), _entry(arms["b"], vb, vb.scores)]
        views["time"] = {"stage": "val", "budget_s": budgets, "scores": entries, "stats": _stats(entries, order_dir)}
    return views, notes


def _pct(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else f"{100 * value:{'+' if sign else ''}.2f}"


def _table(view: dict[str, Any], names: tuple[str, str]) -> list[str]:
    lines = [f"| metric | {names[0]} | {names[1]} | B - A | 95% CI | seeds |", "|---|---|---|---|---|---|"]
    for key, s in view["stats"].items():
        label = key if key == "mIoU" else f"mIoU {key[5:]}" if key.startswith("mIoU_") else f"IoU {key[4:]}"
        arms = [_pct(s[a]["mean"]) + ("" if s[a]["std"] is None else f" ± {_pct(s[a]['std'])}") for a in "ab"]
        ci = s["diff"]["ci"]
        interval = "n/a" if ci is None else f"[{_pct(ci[0], True)}, {_pct(ci[1], True)}]"
        lines.append(f"| {label} | {arms[0]} | {arms[1]} | {_pct(s['diff']['mean'], True)} | {interval} "
                     f"| {s['diff']['n']} |")
    return lines


def _per_run(view: dict[str, Any], names: tuple[str, str]) -> list[str]:
    lines = [f"| seed | {names[0]}: epoch, train time, mIoU | {names[1]}: epoch, train time, mIoU |", "|---|---|---|"]
    for seed in sorted({e["seed"] for e in view["scores"]}):
        cells = []
        for arm in "ab":
            e = next((e for e in view["scores"] if e["seed"] == seed and e["arm"] == arm), None)
            seconds = "-" if e is None or e["train_s"] is None else f"{e['train_s']:.0f} s"
            cells.append("-" if e is None else f"{e['epoch'] + 1}, {seconds}, {_pct(e['scores'].get('mIoU'))}")
        lines.append(f"| {seed} | {cells[0]} | {cells[1]} |")
    return lines


def write_report(sweep: dict[str, Any], views: dict[str, Any], notes: list[str], out: Path, *,
                 budget: str = "both") -> str:
    """Write ``out/compare.md`` and ``out/compare.json`` (every run's scores and the statistics); returns the
    Markdown."""
    names = (sweep["arms"]["a"]["name"], sweep["arms"]["b"]["name"])
    wall = {a: [r["wall_s"] for r in sweep["runs"] if r["arm"] == a and r.get("wall_s")] for a in "ab"}
    lines = [f"# {names[0]} (A) vs {names[1]} (B)", "",
             f"A: {_shown(sweep['arms']['a']['config'])}; B: {_shown(sweep['arms']['b']['config'])}; seeds "
             f"{', '.join(map(str, sweep['seeds']))}; wall time per run: "
             + ", ".join(f"{n} {sum(w) / len(w) / 60:.1f} min" if w else f"{n} -" for n, w in zip(names, wall.values()))
             + ".", "",
             "Scores in %: mean ± std over seeds per arm; B - A: the mean of the per-seed differences; 95% CI: "
             f"paired bootstrap over seeds ({RESAMPLES} resamples, percentile interval; n/a below 2 seeds).", ""]
    if "epochs" in views:
        view = views["epochs"]
        where = ("on test, each run from its last.ckpt (the end of its training)" if view["stage"] == "test" else
                 f"on val at epoch {view['epoch'] + 1}, the last epoch every run validated")
        lines += ["## At equal epochs", "", f"Every run scored {where}.", "", *_table(view, names), "",
                  *_per_run(view, names), ""]
    if "time" in views:
        view, budgets = views["time"], views["time"]["budget_s"]
        lines += ["## At equal training time", "",
                  "Per seed, T = the shorter of the two runs' training times (validation excluded, `time/train_s`) "
                  "at their last validation; each run scored on val at its last validation within T (on val even "
                  "with --stage test).", ""]
        if budgets:
            lines += ["| seed | " + " | ".join(str(s) for s in budgets) + " |", "|---|" + "---|" * len(budgets),
                      "| T | " + " | ".join(f"{t:.0f} s" for t in budgets.values()) + " |", "",
                      *_table(view, names), "", *_per_run(view, names), ""]
        else:
            lines += ["No seed could be compared at equal training time (see the notes).", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    (out / "compare.md").write_text(text)
    runs = [{k: v for k, v in r.items() if k != "validations"} for r in sweep["runs"]]
    payload = {"arms": sweep["arms"], "seeds": sweep["seeds"], "budget": budget, "stage": sweep["stage"],
               "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95, "kind": "percentile"},
               "runs": runs, "views": views, "notes": notes}
    (out / "compare.json").write_text(json.dumps(payload, indent=2))
    return text


def _shown(config: str) -> str:
    """A config's path relative to the working directory when it lies below it (the report names no home folder)."""
    try:
        return str(Path(config).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return config
