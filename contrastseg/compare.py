"""``contrastseg compare``: two configs trained over the same seeds, compared at equal epochs and at equal training
time, with the paired difference and its bootstrap confidence interval.

    contrastseg compare --config A.yaml --config-b B.yaml --seeds 0 1 2 3
    contrastseg compare --config A.yaml --config-b B.yaml --seeds 0 1 2 --parallel 6 --deadline-min 30 \\
        -- --trainer.check_val_every_n_epoch=5      # extra `contrastseg fit` arguments for both arms
    contrastseg compare --from-runs runs/compare/A_vs_B        # score finished runs again
    contrastseg compare --config A.yaml --config-b B.yaml --seeds 0 1 2 3 4 --resume --out runs/compare/A_vs_B
                                                               # train what a sweep cut short (or new seeds) lacks

Each (arm, seed) is ``contrastseg fit --config X --seed_everything=S`` in its own process, logging to
``OUT/<arm>_seed<S>/`` (a CSV logger, whatever the config names) with :class:`~contrastseg.callbacks.TrainClock`
added, so that ``metrics.csv`` gives the training time at every validation. The jobs run seed by seed, both arms
of a seed together in the queue, so a sweep cut short still compares both arms. The two arms of a seed see the
same data in the same order: the training order and the augmentation follow ``seed_everything`` (nothing else
is varied per run). ``--stage test`` then scores every run's ``last.ckpt`` on the test split.

The report (printed, ``OUT/compare.md``, and every score in ``OUT/compare.json``) has two views: at equal epochs
(the last epoch every run validated; on test, the end of training) and at equal training time (per seed, each arm
at its last validation within the shorter of the two runs' training times; always on val). See
:mod:`contrastseg.evaluation.bootstrap` for the statistics and :mod:`contrastseg.compare_report` for the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastseg.compare_report import score_views, write_report
from contrastseg.errors import ConfigError, ContrastSegError
from contrastseg.sweep import Job, JobFailed, log_tail, run_jobs

__all__ = ["eval_command", "fit_command", "main", "resume_sweep", "reuse_arm_a", "run_name"]

ARMS = ("a", "b")


def run_name(arm: str, seed: int) -> str:
    """The run's logger name and folder under ``--out``: ``a_seed0``, ``b_seed0``, ..."""
    return f"{arm}_seed{seed}"


def fit_command(config: str | Path, seed: int, out: Path, name: str, extra: Sequence[str] = ()) -> list[str]:
    """``python -m contrastseg fit`` for one (arm, seed): its config and seed, logging to ``out/name``, no progress
    bar, :class:`~contrastseg.callbacks.TrainClock` added; ``extra`` last (it may override any of these)."""
    return [sys.executable, "-m", "contrastseg", "fit", "--config", str(config), f"--seed_everything={seed}",
            "--trainer.enable_progress_bar=false", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}",
            "--trainer.callbacks+=contrastseg.callbacks.TrainClock", *extra]


def eval_command(run_dir: Path) -> list[str]:
    """``python -m contrastseg test`` of a finished run: its own ``config.yaml`` and ``checkpoints/last.ckpt``,
    logging to ``test/`` beside the run's version folder."""
    return [sys.executable, "-m", "contrastseg", "test", "--config", str(run_dir / "config.yaml"),
            f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "--trainer.logger.init_args.version=test"]


def find_run_dir(out: Path, name: str) -> Path | None:
    """The version folder of run ``name`` under ``out``: the newest one with a ``metrics.csv``."""
    found = [m.parent for m in (out / name).rglob("metrics.csv") if m.parent.name != "test"]
    return max(found, key=lambda p: (p / "metrics.csv").stat().st_mtime_ns) if found else None


def _save(out: Path, sweep: dict[str, Any]) -> None:
    tmp = out / ".runs.json.tmp"
    tmp.write_text(json.dumps(sweep, indent=2))
    tmp.replace(out / "runs.json")


def fit_all(sweep: dict[str, Any], out: Path, *, extra: Sequence[str], parallel: int,
          deadline_s: float | None) -> None:
    """Fit every (arm, seed), seed-major; each finished run is added to ``sweep["runs"]`` and saved in
    ``out/runs.json``."""
    jobs, meta = [], {}
    reused = {(r["arm"], r["seed"]) for r in sweep["runs"]}
    for seed in sweep["seeds"]:
        for arm in ARMS:  # interleaved: a sweep cut short still has both arms of its first seeds
            if (arm, seed) in reused:
                continue
            name = run_name(arm, seed)
            config = sweep["arms"][arm]["config"]
            jobs.append(Job(name, fit_command(config, seed, out, name, extra), f"{sweep['arms'][arm]['name']}, "
                            f"seed {seed}"))
            meta[name] = {"arm": arm, "seed": seed}

    def done(record: dict[str, Any]) -> None:
        run_dir = find_run_dir(out, record["name"])
        sweep["runs"].append({**meta[record["name"]], **record,
                              "run_dir": None if run_dir is None else str(run_dir.relative_to(out))})
        state = "stopped at the deadline" if record["stopped"] else f"exit {record['returncode']}"
        print(f"{record['name']}: {state} after {record['wall_s'] / 60:.1f} min", flush=True)
        _save(out, sweep)

    run_jobs(jobs, out, parallel=parallel, deadline_s=deadline_s, on_record=done)


def test_all(sweep: dict[str, Any], out: Path, *, parallel: int) -> None:
    """``contrastseg test`` of every run with a ``last.ckpt`` and no test scores yet; saves ``out/runs.json``."""
    runs = {r["name"]: r for r in sweep["runs"] if r.get("run_dir") and not r.get("test_dir")
            and (out / r["run_dir"] / "checkpoints" / "last.ckpt").is_file()}
    jobs = [Job(f"{name}_test", eval_command(out / r["run_dir"]), f"test of {name}") for name, r in runs.items()]

    def done(record: dict[str, Any]) -> None:
        run = runs[record["name"].removesuffix("_test")]
        run["test_dir"] = str(Path(run["run_dir"]).parent / "test")
        _save(out, sweep)

    if jobs:
        print(f"testing {len(jobs)} runs from their last.ckpt", flush=True)
        run_jobs(jobs, out, parallel=parallel, on_record=done)


def load_runs(folder: Path) -> dict[str, Any]:
    """``folder/runs.json``; the list a former ``benchmarks.camvid_comparison`` wrote becomes a sweep of two arms."""
    path = folder / "runs.json"
    if not path.is_file():
        raise ConfigError(f"no runs.json in {folder}: --from-runs takes the --out folder of a comparison")
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        return data
    names = list(dict.fromkeys(r["arm"] for r in data))  # arm names in the order they ran
    if len(names) != 2:
        raise ConfigError(f"{path} holds {len(names)} arms ({', '.join(names)}); a comparison has two")
    runs = []
    for record in data:
        run_dir = find_run_dir(folder, record["name"])
        runs.append({**record, "arm": ARMS[names.index(record["arm"])],
                     "run_dir": None if run_dir is None else str(run_dir.relative_to(folder))})
    return {"arms": {arm: {"name": n, "config": "?"} for arm, n in zip(ARMS, names)},
            "seeds": sorted({r["seed"] for r in runs}), "stage": "val", "extra": [], "runs": runs}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastseg compare",
        description="Train two configs over the same seeds; compare them at equal epochs and at equal training "
                    "time (mean +- std per arm, B - A with a paired bootstrap 95% CI). Output: OUT/compare.md, "
                    "OUT/compare.json.",
        usage="contrastseg compare --config A.yaml --config-b B.yaml [--seeds S ...] [options] [-- FIT ARGS ...]")
    add = parser.add_argument
    add("--config", "--config-a", dest="config_a", metavar="A.yaml", help="arm A's config (the baseline)")
    add("--config-b", metavar="B.yaml", help="arm B's config")
    add("--seeds", type=int, nargs="+", metavar="S", default=[0, 1, 2],
        help="seed_everything of the runs (default: 0 1 2)")
    add("--budget", choices=("epochs", "time", "both"), default="both",
        help="compare at equal epochs, at equal training time, or both (default)")
    add("--stage", choices=("val", "test"), default=None,
        help="split of the equal-epoch view: val (default), or test from each run's last.ckpt")
    add("--name-a", metavar="NAME", default=None, help="arm A's name in the report (default: its config's file name)")
    add("--name-b", metavar="NAME", default=None, help="arm B's name in the report")
    add("--parallel", type=int, metavar="N", default=1, help="runs trained at the same time (default 1)")
    add("--deadline-min", type=float, metavar="M", default=None, help="stop unfinished runs after this many minutes")
    add("--out", metavar="DIR", default=None,
        help="folder of the runs and the report (default: runs/compare/<A>_vs_<B>)")
    add("--from-runs", metavar="DIR", default=None, help="only score the runs of an earlier comparison in DIR")
    add("--reuse-a", metavar="DIR", default=None,
        help="take arm A's finished runs from the comparison in DIR (same config, fit arguments and seeds) instead "
             "of training them again: several B configs against one baseline")
    add("--resume", action="store_true",
        help="continue the comparison in --out (same configs and fit arguments): keep its finished runs, train "
             "the runs it lacks, including seeds added to --seeds")
    return parser


def _error(message: str) -> int:
    print(f"contrastseg: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``contrastseg compare ...`` (see the module's description); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    extra = argv[split + 1:]
    args = _parser().parse_args(argv[:split])
    if args.stage == "test" and args.budget == "time":
        return _error("--stage test scores the equal-epoch view: use it with --budget epochs or both")
    if args.parallel < 1:
        return _error(f"--parallel must be at least 1, got {args.parallel}")
    try:
        if args.from_runs:
            out = Path(args.from_runs)
            sweep = load_runs(out)
            sweep["stage"] = args.stage or sweep.get("stage", "val")
        else:
            out, sweep = _new_sweep(args, extra, resume=args.resume)
            if args.resume and (out / "runs.json").is_file():
                sweep = resume_sweep(sweep, out)
            if args.reuse_a:
                reuse_arm_a(sweep, Path(args.reuse_a))
            deadline = None if args.deadline_min is None else 60 * args.deadline_min
            fit_all(sweep, out, extra=extra, parallel=args.parallel, deadline_s=deadline)
        if sweep["stage"] == "test" and args.budget != "time":
            test_all(sweep, out, parallel=args.parallel)
        views, notes = score_views(sweep, out, budget=args.budget)
    except JobFailed as err:
        tail = log_tail(err.log)
        print(f"\n{'-' * 30} last lines of {err.log} {'-' * 30}\n{tail}", file=sys.stderr)
        print(f"contrastseg: error: {err}", file=sys.stderr)
        return 1
    except ContrastSegError as err:
        return _error(str(err))
    text = write_report(sweep, views, notes, out, budget=args.budget)
    print(text)
    return 0


def _new_sweep(args: argparse.Namespace, extra: Sequence[str], *, resume: bool = False
               ) -> tuple[Path, dict[str, Any]]:
    """The output folder and the description of a new sweep; one-line errors for what would fail later."""
    if not args.config_a or not args.config_b:
        raise ConfigError("give both configs: --config A.yaml --config-b B.yaml (or --from-runs DIR)")
    for config in (args.config_a, args.config_b):
        if not Path(config).is_file():
            raise ConfigError(f"config file {config} does not exist")
    stems = (Path(args.config_a).stem, Path(args.config_b).stem)
    names = stems if stems[0] != stems[1] else ("A", "B")
    out = Path(args.out or Path("runs") / "compare" / f"{stems[0]}_vs_{stems[1]}").resolve()
    if (out / "runs.json").is_file() and not resume:
        raise ConfigError(f"{out} already holds a comparison (runs.json): give another --out, or score it again "
                          f"with --from-runs {out}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds lists a seed twice: {' '.join(map(str, args.seeds))}")
    arms = {"a": {"name": args.name_a or names[0], "config": str(Path(args.config_a).resolve())},
            "b": {"name": args.name_b or names[1], "config": str(Path(args.config_b).resolve())}}
    if arms["a"]["name"] == arms["b"]["name"]:
        raise ConfigError(f"both arms are named {arms['a']['name']!r}: give --name-a and --name-b")
    return out, {"arms": arms, "seeds": list(args.seeds), "stage": args.stage or "val", "extra": list(extra),
                 "runs": []}


def resume_sweep(sweep: dict[str, Any], out: Path) -> dict[str, Any]:
    """The comparison saved in ``out/runs.json`` continued with ``sweep``'s seeds: its finished runs are kept (and
    its arm names); unfinished or failed runs are dropped, to be trained again.

    Raises:
        ConfigError: the saved comparison trained other configs or with other fit arguments.
    """
    before = load_runs(out)
    for arm in ARMS:
        if before["arms"][arm]["config"] != sweep["arms"][arm]["config"]:
            raise ConfigError(f"--resume {out}: its arm {arm.upper()} trained {before['arms'][arm]['config']}, not "
                              f"{sweep['arms'][arm]['config']}")
    if list(before.get("extra", [])) != sweep["extra"]:
        raise ConfigError(f"--resume {out}: its runs had the fit arguments {before.get('extra')}, these have "
                          f"{sweep['extra']}")
    kept = [r for r in before["runs"] if r.get("returncode") == 0 and not r.get("stopped") and r.get("run_dir")]
    seeds = list(dict.fromkeys([*before["seeds"], *sweep["seeds"]]))
    print(f"resuming {out}: {len(kept)} finished runs kept, seeds {' '.join(map(str, seeds))}", flush=True)
    return {**before, "seeds": seeds, "stage": sweep["stage"], "runs": kept}


def reuse_arm_a(sweep: dict[str, Any], earlier: Path) -> None:
    """Add arm A's runs of the comparison in ``earlier`` to ``sweep["runs"]`` (their folders by absolute path).

    Raises:
        ConfigError: the earlier comparison trained another config or with other fit arguments, or lacks a
            finished run of one of the seeds.
    """
    before = load_runs(earlier)
    config, mine = before["arms"]["a"]["config"], sweep["arms"]["a"]["config"]
    if config != mine:
        raise ConfigError(f"--reuse-a {earlier}: its arm A trained {config}, not {mine}")
    if list(before.get("extra", [])) != sweep["extra"]:
        raise ConfigError(f"--reuse-a {earlier}: its runs had the fit arguments {before.get('extra')}, these have "
                          f"{sweep['extra']}")
    runs = {r["seed"]: r for r in before["runs"] if r["arm"] == "a"}
    have = {r["seed"] for r in sweep["runs"] if r["arm"] == "a"}  # a resumed sweep holds some already
    for seed in (s for s in sweep["seeds"] if s not in have):
        run = runs.get(seed)
        if run is None or run.get("returncode") != 0 or run.get("stopped") or not run.get("run_dir"):
            raise ConfigError(f"--reuse-a {earlier}: no finished arm-A run of seed {seed}")
        absolute = {key: str((earlier / run[key]).resolve()) for key in ("run_dir", "test_dir") if run.get(key)}
        sweep["runs"].append({**run, **absolute, "reused_from": str(earlier.resolve())})
