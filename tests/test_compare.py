"""contrastseg compare: runs, equal-epoch and equal-time selection, the paired bootstrap, the report."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Callback

from contrastseg.compare import fit_command, main
from contrastseg.evaluation.bootstrap import compare_paired, paired_bootstrap_ci
from contrastseg.evaluation.history import equal_epoch, equal_time, read_validations
from contrastseg.sweep import Job, JobFailed, run_jobs

REPO = Path(__file__).resolve().parents[1]
QUICK_A, QUICK_B = REPO / "experiments" / "quickstart.yaml", REPO / "experiments" / "quickstart_contrastive.yaml"
TINY = ["--model.net.init_args.encoder.name=resnet18", "--data.init_args.num_train=32", "--data.init_args.num_val=8",
        "--data.init_args.num_test=8", "--data.init_args.image_size=[64, 64]", "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0", "--trainer.accelerator=cpu"]


# ---------------------------------------------------------------- the paired bootstrap, by hand


def test_bootstrap_of_two_seeds_spans_both_differences() -> None:
    # Resamples of (1, 3): (1, 1), (1, 3), (3, 1), (3, 3) with means 1, 2, 2, 3: a quarter of the means is 1 and a
    # quarter is 3, so the 2.5 and 97.5 percentiles are exactly 1 and 3.
    assert paired_bootstrap_ci([1.0, 3.0]) == (1.0, 3.0)


def test_bootstrap_interval_of_a_few_resamples_by_hand() -> None:
    d = [0.0, 1.0, 5.0]
    picks = np.random.default_rng(7).integers(0, 3, size=(4, 3))  # the 4 resamples the function draws with seed 7
    m = sorted(sum(d[i] for i in row) / 3 for row in picks)
    # numpy's linear percentile of 4 sorted values: position p * 3 between neighbours.
    low, high = m[0] + 0.075 * (m[1] - m[0]), m[2] + 0.925 * (m[3] - m[2])
    assert paired_bootstrap_ci(d, resamples=4, seed=7) == pytest.approx((low, high))


def test_bootstrap_interval_matches_the_enumeration_of_every_resample() -> None:
    d = [0.0, 1.0, 2.0, 7.0]
    means = np.array([np.mean(r) for r in itertools.product(d, repeat=4)])  # all 256 equally likely resamples
    exact = np.percentile(means, [2.5, 97.5])
    low, high = paired_bootstrap_ci(d)
    assert abs(low - exact[0]) <= 0.25 and abs(high - exact[1]) <= 0.25, ((low, high), exact)
    assert paired_bootstrap_ci(d) == (low, high)  # a fixed seed: the same interval every time


def test_fewer_than_two_seeds_have_no_interval() -> None:
    assert paired_bootstrap_ci([0.4]) is None and paired_bootstrap_ci([]) is None
    stats = compare_paired({0: 0.5, 1: 0.6}, {0: 0.7})  # only seed 0 is paired
    assert stats["diff"]["n"] == 1 and stats["diff"]["ci"] is None
    assert stats["diff"]["mean"] == pytest.approx(0.2) and stats["a"]["std"] == pytest.approx(0.0707, abs=1e-4)


# ---------------------------------------------------------------- equal epochs, equal time


def _metrics_csv(path: Path, validations: list[tuple[int, float | None, float]]) -> Path:
    """A metrics.csv as Lightning's CSV logger writes it: training rows, then a row per validation with
    (epoch, time/train_s, mIoU)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["epoch", "step", "time/train_s", "train/loss", "val/IoU_sky", "val/IoU_car", "val/acc", "val/loss",
            "val/mIoU", "val/mIoU_things"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for epoch, seconds, miou in validations:
            writer.writerow({"epoch": epoch, "step": 4 * epoch + 3, "train/loss": 1.0})
            writer.writerow({"epoch": epoch, "step": 4 * epoch + 3, "time/train_s": "" if seconds is None else seconds,
                             "val/IoU_sky": miou + 0.1, "val/IoU_car": miou - 0.1, "val/acc": 0.9, "val/loss": 0.5,
                             "val/mIoU": miou, "val/mIoU_things": miou - 0.1})
    return path


def test_validations_are_read_without_the_stage_prefix(tmp_path) -> None:
    rows = read_validations(_metrics_csv(tmp_path / "m.csv", [(0, 10.0, 0.3), (1, 20.0, 0.4)]))
    assert [(v.epoch, v.step, v.train_s) for v in rows] == [(0, 3, 10.0), (1, 7, 20.0)]
    assert rows[1].scores == pytest.approx({"mIoU": 0.4, "IoU_sky": 0.5, "IoU_car": 0.3, "mIoU_things": 0.3})


def test_equal_time_takes_each_run_at_its_last_validation_within_the_shorter_training(tmp_path) -> None:
    a = read_validations(_metrics_csv(tmp_path / "a.csv", [(0, 10, 0.1), (1, 20, 0.2), (2, 30, 0.3), (3, 40, 0.4)]))
    b = read_validations(_metrics_csv(tmp_path / "b.csv", [(0, 15, 0.5), (1, 30, 0.6), (2, 45, 0.7)]))
    budget, va, vb = equal_time(a, b)  # T = min(40, 45): A at its end, B at 30 s (45 s is beyond T)
    assert (budget, va.epoch, vb.epoch) == (40, 3, 1)
    budget, vb, va = equal_time(b[:2], a)  # B cut short at 30 s: T = 30, A at 30 s exactly
    assert (budget, vb.epoch, va.epoch) == (30, 1, 2)


def test_equal_time_needs_the_clock_and_a_validation_within_the_budget(tmp_path) -> None:
    timed = read_validations(_metrics_csv(tmp_path / "a.csv", [(0, 10, 0.1), (1, 20, 0.2)]))
    untimed = read_validations(_metrics_csv(tmp_path / "b.csv", [(0, None, 0.1)]))
    with pytest.raises(ValueError, match="no time/train_s"):
        equal_time(timed, untimed)
    late = read_validations(_metrics_csv(tmp_path / "c.csv", [(0, 25, 0.1), (1, 50, 0.2)]))
    with pytest.raises(ValueError, match="beyond T = 20.0 s"):
        equal_time(timed, late)


def test_equal_epoch_is_the_last_epoch_every_run_validated(tmp_path) -> None:
    runs = {"a": [(0, 1, 0.1), (1, 2, 0.2), (2, 3, 0.3)], "b": [(0, 1, 0.1), (1, 2, 0.25)]}
    histories = {k: read_validations(_metrics_csv(tmp_path / f"{k}.csv", v)) for k, v in runs.items()}
    epoch, picked = equal_epoch(histories)
    assert epoch == 1 and picked["b"].scores["mIoU"] == 0.25 and picked["a"].scores["mIoU"] == 0.2
    histories["c"] = read_validations(_metrics_csv(tmp_path / "c.csv", [(2, 3, 0.3)]))
    with pytest.raises(ValueError, match="no epoch was validated by every run"):
        equal_epoch(histories)


# ---------------------------------------------------------------- the report of finished runs


def _sweep(out: Path, runs: dict[tuple[str, int], list[tuple[int, float, float]]], *, test: dict | None = None,
           stage: str = "val") -> Path:
    """A comparison folder as compare leaves it: runs.json and each run's metrics.csv and val_metrics.json."""
    records = []
    for (arm, seed), validations in runs.items():
        run_dir = out / f"{arm}_seed{seed}" / "version_0"
        _metrics_csv(run_dir / "metrics.csv", validations)
        per_class = [{"class": c, "iou": 0.5} for c in ("sky", "car")]  # the data module's order: sky before car
        (run_dir / "val_metrics.json").write_text(json.dumps({"group_mIoU": {"things": 0.4}, "per_class": per_class}))
        record = {"arm": arm, "seed": seed, "name": f"{arm}_seed{seed}", "returncode": 0, "stopped": False,
                  "wall_s": 60.0, "run_dir": f"{arm}_seed{seed}/version_0"}
        if test is not None:
            test_dir = out / f"{arm}_seed{seed}" / "test"
            test_dir.mkdir()
            miou = test[(arm, seed)]
            (test_dir / "test_metrics.json").write_text(json.dumps({
                "mIoU": miou, "group_mIoU": {"things": None},
                "per_class": [{"class": "sky", "iou": miou}, {"class": "car", "iou": None}]}))
            record["test_dir"] = f"{arm}_seed{seed}/test"
        records.append(record)
    arms = {"a": {"name": "CE", "config": "a.yaml"}, "b": {"name": "CE + contrast", "config": "b.yaml"}}
    (out / "runs.json").write_text(json.dumps({"arms": arms, "seeds": sorted({s for _, s in runs}), "stage": stage,
                                               "extra": [], "runs": records}))
    return out


RUNS = {("a", 0): [(0, 10, 0.30), (1, 20, 0.40)], ("b", 0): [(0, 15, 0.35), (1, 30, 0.50)],
        ("a", 1): [(0, 10, 0.32), (1, 20, 0.36)], ("b", 1): [(0, 15, 0.36), (1, 30, 0.44)],
        ("a", 2): [(0, 10, 0.31), (1, 20, 0.41)], ("b", 2): [(0, 15, 0.33), (1, 30, 0.41)]}


def test_report_of_finished_runs_has_both_views_and_the_intervals(tmp_path, capsys) -> None:
    out = _sweep(tmp_path, RUNS)
    assert main(["--from-runs", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    epochs, at_time = report["views"]["epochs"], report["views"]["time"]
    assert epochs["epoch"] == 1 and epochs["stage"] == "val" and at_time["stage"] == "val"
    diffs = [0.50 - 0.40, 0.44 - 0.36, 0.41 - 0.41]  # B - A per seed at epoch 1
    stats = epochs["stats"]["mIoU"]
    assert stats["diff"]["mean"] == pytest.approx(np.mean(diffs))
    assert stats["diff"]["ci"] == pytest.approx(list(paired_bootstrap_ci(diffs)))
    assert stats["a"]["mean"] == pytest.approx(np.mean([0.40, 0.36, 0.41]))
    assert stats["a"]["std"] == pytest.approx(np.std([0.40, 0.36, 0.41], ddof=1))
    # Equal time: T = 20 s (A's end) per seed; B's last validation within 20 s is epoch 0 (15 s).
    assert at_time["budget_s"] == {"0": 20.0, "1": 20.0, "2": 20.0}
    b_scores = sorted((e["seed"], e["epoch"], e["scores"]["mIoU"]) for e in at_time["scores"] if e["arm"] == "b")
    assert b_scores == [(0, 0, 0.35), (1, 0, 0.36), (2, 0, 0.33)]
    assert list(epochs["stats"]) == ["mIoU", "mIoU_things", "IoU_sky", "IoU_car"]  # groups, then classes in order
    assert len(report["runs"]) == 6 and report["bootstrap"]["resamples"] == 10000
    text = (out / "compare.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "## At equal epochs" in text and "## At equal training time" in text and "at epoch 2" in text
    assert "| mIoU | 39.00 ± 2.65 | 45.00 ± 4.58 | +6.00 |" in text and "| IoU sky |" in text
    assert "| mIoU things |" in text


def test_one_seed_has_no_interval_and_budget_picks_the_view(tmp_path, capsys) -> None:
    out = _sweep(tmp_path, {k: v for k, v in RUNS.items() if k[1] == 0} | {("a", 1): RUNS[("a", 1)]})
    assert main(["--from-runs", str(out), "--budget", "time"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert list(report["views"]) == ["time"] and report["views"]["time"]["stats"]["mIoU"]["diff"]["ci"] is None
    assert "seed 1: only a_seed1 has a run: seed left out" in report["notes"]
    text = capsys.readouterr().out
    assert "| n/a |" in text and "At equal epochs" not in text


def test_test_stage_scores_the_epoch_view_on_test_and_the_time_view_on_val(tmp_path) -> None:
    test = {("a", 0): 0.2, ("b", 0): 0.3, ("a", 1): 0.25, ("b", 1): 0.3}
    out = _sweep(tmp_path, {k: v for k, v in RUNS.items() if k[1] < 2}, test=test, stage="test")
    assert main(["--from-runs", str(out)]) == 0  # the runs have test scores: nothing is run
    views = json.loads((out / "compare.json").read_text())["views"]
    assert views["epochs"]["stage"] == "test" and views["time"]["stage"] == "val"
    assert views["epochs"]["stats"]["mIoU"]["diff"]["per_seed"] == pytest.approx({"0": 0.1, "1": 0.05})
    assert "IoU_car" not in views["epochs"]["stats"]  # absent from labels and predictions: no score
    assert views["time"]["stats"]["mIoU"]["a"]["mean"] == pytest.approx(0.38)


def test_runs_of_the_former_camvid_benchmark_are_scored(tmp_path) -> None:
    out = _sweep(tmp_path, {k: v for k, v in RUNS.items() if k[1] < 2})
    runs = json.loads((out / "runs.json").read_text())["runs"]
    former = [{"arm": {"a": "CE", "b": "CE + ms + cs"}[r["arm"]], "seed": r["seed"], "name": r["name"],
               "returncode": 0, "stopped": False, "wall_s": 1.0} for r in runs]  # its list, without run_dir
    (out / "runs.json").write_text(json.dumps(former))
    assert main(["--from-runs", str(out), "--budget", "epochs"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["arms"]["b"]["name"] == "CE + ms + cs"
    assert report["views"]["epochs"]["stats"]["mIoU"]["diff"]["n"] == 2


def test_user_errors_are_one_line(tmp_path, capsys) -> None:
    from contrastseg.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["compare", "--config", str(tmp_path / "missing.yaml"), "--config-b", str(QUICK_B)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err == f"contrastseg: error: config file {tmp_path / 'missing.yaml'} does not exist"
    assert main(["--config", str(QUICK_A), "--config-b", str(QUICK_B), "--stage", "test", "--budget", "time"]) == 2
    assert main(["--from-runs", str(tmp_path)]) == 2
    _sweep(tmp_path, RUNS)
    assert main(["--config", str(QUICK_A), "--config-b", str(QUICK_B), "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "--budget epochs or both" in lines[0] and "no runs.json" in lines[1]
    assert "already holds a comparison" in lines[2]


# ---------------------------------------------------------------- the processes


def test_a_failed_run_stops_the_others(tmp_path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    failing = [sys.executable, "-c", "import time; time.sleep(1); print('boom'); raise SystemExit(3)"]
    started = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):  # remember every process the sweep starts
        started.append(real_popen(cmd, **kwargs))
        return started[-1]

    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(subprocess, "Popen", popen)
        with pytest.raises(JobFailed, match=r"CE, seed 0 \(a_seed0\) failed with exit status 3") as info:
            run_jobs([Job("a_seed0", failing, "CE, seed 0"), Job("b_seed0", sleeper, "B, seed 0")], tmp_path,
                     parallel=2, poll_s=0.1)
    assert len(started) == 2 and all(p.poll() is not None for p in started)  # the sleeper did not outlive it
    assert time.perf_counter() - t0 < 60 and "boom" in info.value.log.read_text()


def test_the_deadline_stops_running_runs_and_drops_the_rest(tmp_path) -> None:
    # Like contrastseg fit on SIGTERM: note it, exit 143.
    stoppable = [sys.executable, "-c", "import signal, sys, time\n"
                 "signal.signal(signal.SIGTERM, lambda *a: (print('saved'), sys.exit(143)))\ntime.sleep(600)"]
    records = run_jobs([Job("a_seed0", stoppable, "A"), Job("b_seed0", stoppable, "B")], tmp_path, parallel=1,
                       deadline_s=1.5, poll_s=0.1)
    assert [(r["name"], r["returncode"], r["stopped"]) for r in records] == [("a_seed0", 143, True)]
    assert "saved" in (tmp_path / "a_seed0.log").read_text() and not (tmp_path / "b_seed0.log").exists()


class FirstBatch(Callback):
    """Keeps the first training batch of every run (the runs below are in this process)."""

    batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            FirstBatch.batches.append({k: v.clone() for k, v in batch.items() if torch.is_tensor(v)})


def test_both_arms_of_a_seed_train_on_the_same_first_batch(tmp_path) -> None:
    """The training order and augmentation follow seed_everything only: compare varies nothing else per run."""
    from contrastseg.cli import main as cli_main

    FirstBatch.batches = []
    for seed, config in ((3, QUICK_A), (3, QUICK_B), (4, QUICK_A)):
        command = fit_command(config, seed, tmp_path, f"run{len(FirstBatch.batches)}",
                              [*TINY, "--trainer.fast_dev_run=1", "--trainer.callbacks+=tests.test_compare.FirstBatch"])
        cli_main(command[3:])  # after `python -m contrastseg`
    (a, b, other) = FirstBatch.batches
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], other["image"])  # another seed: another order


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compare_end_to_end_on_synthetic_data(tmp_path) -> None:
    out = tmp_path / "cmp"
    result = subprocess.run(
        [sys.executable, "-m", "contrastseg", "compare", "--config", str(QUICK_A), "--config-b", str(QUICK_B),
         "--seeds", "0", "1", "--stage", "test", "--out", str(out), "--name-a", "CE", "--name-b", "CE + contrast",
         "--", *TINY, "--trainer.max_epochs=2"], capture_output=True, text=True, timeout=880)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "compare.json").read_text())
    assert {r["name"] for r in report["runs"]} == {"a_seed0", "b_seed0", "a_seed1", "b_seed1"}
    epochs, at_time = report["views"]["epochs"], report["views"]["time"]
    assert epochs["stage"] == "test" and len(epochs["scores"]) == 4
    assert epochs["stats"]["mIoU"]["diff"]["n"] == 2 and len(epochs["stats"]["mIoU"]["diff"]["ci"]) == 2
    assert {"mIoU_stuff", "mIoU_things", "mIoU_small", "IoU_sky"} <= set(epochs["stats"])
    for entry in at_time["scores"]:  # each run at its last validation within its seed's T
        assert entry["train_s"] <= at_time["budget_s"][str(entry["seed"])] + 1e-9
    # Timing on a shared CPU is noisy: a seed whose slower arm validated first after T is left out, with a note.
    assert len(at_time["budget_s"]) == 2 or any("equal-time view" in n for n in report["notes"])
    text = (out / "compare.md").read_text()
    assert "## At equal epochs" in text and "## At equal training time" in text and "on test" in text
    assert text in result.stdout
    for run in report["runs"]:
        assert (out / run["test_dir"] / "test_metrics.json").is_file()


def test_reuse_a_takes_the_baselines_runs_of_an_earlier_comparison(tmp_path) -> None:
    from contrastseg.compare import reuse_arm_a

    earlier = _sweep(tmp_path / "earlier", RUNS)
    sweep = {"arms": {"a": {"name": "CE", "config": "a.yaml"}, "b": {"name": "other", "config": "c.yaml"}},
             "seeds": [0, 2], "stage": "val", "extra": [], "runs": []}
    reuse_arm_a(sweep, earlier)
    assert [(r["arm"], r["seed"]) for r in sweep["runs"]] == [("a", 0), ("a", 2)]
    assert all(Path(r["run_dir"]).is_absolute() and (Path(r["run_dir"]) / "metrics.csv").is_file()
               for r in sweep["runs"])
    from contrastseg.errors import ConfigError

    for change, message in [({"arms": {**sweep["arms"], "a": {"name": "CE", "config": "x.yaml"}}}, "trained a.yaml"),
                            ({"extra": ["--trainer.max_epochs=2"]}, "fit arguments"),
                            ({"seeds": [0, 5]}, "no finished arm-A run of seed 5")]:
        with pytest.raises(ConfigError, match=message):
            reuse_arm_a({**sweep, "runs": [], **change}, earlier)


def test_resume_keeps_finished_runs_and_adds_seeds(tmp_path, capsys) -> None:
    from contrastseg.compare import resume_sweep, reuse_arm_a
    from contrastseg.errors import ConfigError

    out = _sweep(tmp_path / "sweep", RUNS)
    saved = json.loads((out / "runs.json").read_text())
    saved["runs"][0] = {**saved["runs"][0], "returncode": 1}  # a failed run is trained again
    (out / "runs.json").write_text(json.dumps(saved))
    sweep = {"arms": {arm: {"name": "x", "config": saved["arms"][arm]["config"]} for arm in ("a", "b")},
             "seeds": [0, 7], "stage": "test", "extra": [], "runs": []}
    resumed = resume_sweep(sweep, out)
    assert resumed["seeds"] == [*saved["seeds"], 7] and resumed["stage"] == "test"
    assert resumed["arms"] == saved["arms"]  # names stay those of the first call
    assert resumed["runs"] == saved["runs"][1:]
    assert "runs kept" in capsys.readouterr().out
    earlier = _sweep(tmp_path / "earlier", RUNS)
    resumed = {**resumed, "seeds": [0, 1, 2]}
    reuse_arm_a(resumed, earlier)  # only arm A's seed 0, the run the resumed sweep lacks, is taken
    assert sorted(r["seed"] for r in resumed["runs"] if r["arm"] == "a") == [0, 1, 2]
    for change, message in [({"arms": {**sweep["arms"], "b": {"name": "x", "config": "other.yaml"}}}, "arm B"),
                            ({"extra": ["--trainer.max_epochs=2"]}, "fit arguments")]:
        with pytest.raises(ConfigError, match=message):
            resume_sweep({**sweep, **change}, out)
