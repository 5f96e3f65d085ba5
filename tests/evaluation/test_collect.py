from pathlib import Path

import pytest

from contrastseg.cli import main
from contrastseg.evaluation.collect import collect_runs, describe_run, format_table, saved_logger_name
from contrastseg.evaluation.collect import main as collect_main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("init_args", "expected"), [
    (None, ("", "", "", "-")),
    ({"stages": [3], "cross_scale_pairs": []}, ("x", "", "", "-")),
    ({"cross_scale_pairs": []}, ("", "x", "", "-")),
    ({"cross_scale_pairs": [[0, 3]]}, ("", "x", "x", "1")),
    ({}, ("", "x", "x", "2")),  # the default pairs
    ({"stages": [0, 1, 3]}, ("", "x", "x", "1")),  # three stages: (0, last) by default
    ({"lambda_cs": 0.0}, ("", "x", "", "-")),  # the contrast_lambdas sweep's lambda 0 is off
    ({"lambda_ms": 0.0}, ("", "", "x", "2")),
])
def test_describe_run_reads_the_loss_columns(init_args, expected) -> None:
    losses = [{"class_path": "contrastseg.losses.CrossEntropy"}]
    if init_args is not None:
        losses.append({"class_path": "contrastseg.losses.MultiScaleContrast", "init_args": init_args})
    config = {"model": {"net": {"init_args": {"encoder": {"name": "hrnet_w48"},
                                              "decoder": {"class_path": "contrastseg.models.HRNetV2Head"}}},
                        "losses": losses}}
    row = describe_run(config)
    assert (row["L_c"], row["L_cms"], row["L_ccs"], row["scale pairs"]) == expected
    assert row["model"] == "HRNetV2" and row["backbone"] == "hrnet_w48"


def test_collects_real_runs_into_mean_and_std_per_row(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    for config in ("camvid_ce", "camvid_lcms_lccs_1pair"):
        for seed in (0, 1):
            main(["fit", "--config", f"experiments/ablations/{config}.yaml", f"--seed_everything={seed}",
                  "--data=contrastseg.data.SyntheticDataModule", "--data.image_size=[64, 64]", "--data.num_train=4",
                  "--data.num_val=2", "--data.batch_size=2", "--data.num_workers=0", "--trainer.accelerator=cpu",
                  "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
                  f"--trainer.logger.init_args.save_dir={tmp_path}"])
    rows = {r["row"]: r for r in format_table(collect_runs([tmp_path]))}
    assert set(rows) == {"camvid_ce", "camvid_lcms_lccs_1pair"}
    assert rows["camvid_ce"]["seeds"] == "0, 1" and " ± " in rows["camvid_ce"]["mIoU"]
    assert (rows["camvid_lcms_lccs_1pair"]["L_cms"], rows["camvid_lcms_lccs_1pair"]["scale pairs"]) == ("x", "1")
    capsys.readouterr()
    assert collect_main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| row | model | backbone | L_c | L_cms | L_ccs |") and "camvid_ce" in out
    assert (tmp_path / "t.csv").read_text().startswith("row,model,backbone")
    assert collect_main([str(tmp_path / "nothing")]) == 2
    # Validating a run again writes a folder of its own under the same name and seed: it replaces, not adds.
    best = next(tmp_path.glob("camvid_ce/*/checkpoints/last.ckpt"))
    main(["validate", "--config", "experiments/ablations/camvid_ce.yaml", "--seed_everything=1",
          f"--ckpt_path={best}",
          "--data=contrastseg.data.SyntheticDataModule", "--data.image_size=[64, 64]", "--data.num_val=2",
          "--data.batch_size=2", "--data.num_workers=0", "--trainer.accelerator=cpu", "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    assert len(list(tmp_path.glob("camvid_ce/*/val_metrics.json"))) == 3
    rows = {r["row"]: r for r in format_table(collect_runs([tmp_path]))}
    assert rows["camvid_ce"]["seeds"] == "0, 1"


def test_mean_std_by_hand() -> None:
    from contrastseg.evaluation.collect import mean_std

    assert mean_std([0.5, 0.7]) == "60.0 ± 14.1"  # sample std of 50 and 70 is 14.14
    assert mean_std([0.39418, None], digits=2) == "39.42" and mean_std([]) == "-"


@pytest.mark.parametrize(("trainer", "expected"), [
    ({"logger": {"class_path": "CSVLogger", "init_args": {"name": "a"}}}, "a"),
    ({"logger": [{"class_path": "WandbLogger", "init_args": {"name": "b"}}, {"class_path": "CSVLogger"}]}, "b"),
    ({"logger": True}, None), ({"logger": []}, None), ({}, None), (None, None),
])
def test_saved_logger_name(trainer, expected) -> None:
    assert saved_logger_name({"trainer": trainer}) == expected


def test_collect_groups_runs_by_name_with_a_list_of_loggers(tmp_path: Path) -> None:
    for seed, miou in ((0, 0.5), (1, 0.7)):
        run = tmp_path / f"version_{seed}"
        run.mkdir()
        (run / "config.yaml").write_text(
            f"seed_everything: {seed}\ntrainer:\n  logger:\n  - class_path: CSVLogger\n    init_args: {{name: row_a}}\n")
        (run / "val_metrics.json").write_text(f'{{"mIoU": {miou}}}')
    (entry,) = collect_runs([tmp_path])
    assert entry["row"] == "row_a" and sorted(r["seed"] for r in entry["runs"]) == [0, 1]
    (row,) = format_table([entry])
    assert row["mIoU"] == "60.0 ± 14.1" and row["seeds"] in ("0, 1", "1, 0")
