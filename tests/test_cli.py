import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from contrastseg.cli import main
from contrastseg.cli_config import config_chain

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "experiments").glob("*.yaml") if not p.name.startswith("_"))  # sweeps/ are W&B files
ENTRY = Path(sys.executable).with_name("contrastseg")  # the installed console script


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([str(ENTRY), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_experiment_parses(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["net"]["class_path"]
    assert resolved["data"]["class_path"]
    assert "extends" not in resolved


def test_extends_chain_and_later_files_win(tmp_path: Path, capsys) -> None:
    (tmp_path / "base.yaml").write_text("trainer: {max_epochs: 3, max_steps: 7}\nmodel: {scheduler_interval: epoch}\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\ntrainer: {max_epochs: 5}\n")
    (tmp_path / "top.yaml").write_text("extends: [mid.yaml]\n")
    chain = config_chain(tmp_path / "top.yaml")
    assert chain[0][0].endswith("base.yaml") and yaml.safe_load(chain[1][0]) == {"trainer": {"max_epochs": 5}}
    assert len(chain) == 2  # top.yaml holds nothing but 'extends'
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"), "--config", str(tmp_path / "top.yaml"),
              "--trainer.max_epochs=9", "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["trainer"]["max_epochs"] == 9 and resolved["trainer"]["max_steps"] == 7
    assert resolved["model"]["scheduler_interval"] == "epoch"


def test_extends_cycle_and_missing_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    for name, message in (("a.yaml", "cycle"), ("c.yaml", "missing.yaml does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(tmp_path / name)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def _one_line_error(*args: str) -> str:
    result = _run(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stderr


QUICK = ["fit", "--config", str(REPO / "experiments" / "quickstart.yaml")]


def test_unknown_encoder_is_one_line_error() -> None:
    err = _one_line_error(*QUICK, "--model.net.init_args.encoder.name=resnet1000")
    assert "unknown encoder name 'resnet1000'; known encoders:" in err and "hrnet_w48" in err


def test_malformed_key_is_named() -> None:
    err = _one_line_error(*QUICK, "--trainer.max_epochs=lots")
    assert 'key "trainer.max_epochs": Expected a int. Got value: lots' in err
    err = _one_line_error(*QUICK, "--data.init_args.batch_size=x")
    assert 'key "data.batch_size"' in err


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    err = _one_line_error(*QUICK, "--data=contrastseg.data.FolderDataModule", f"--data.root={tmp_path}")
    assert "num_classes" in err


def test_unknown_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {REPO / 'experiments' / 'quickstart.yaml'}\nmodel:\n  learning_rate: 3\n")
    err = _one_line_error("fit", "--config", str(bad))
    assert "learning_rate" in err


def test_broken_yaml_names_file_line_and_column(tmp_path: Path, capsys) -> None:
    # PyYAML's message is several lines (source excerpt, caret): the user gets one line naming file:line:column.
    tmp_path = tmp_path.resolve()  # the CLI names resolved paths (relative ones when under the working directory)
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: 1\nmodel:\n  net: [1,2\ndata: {}\n")
    (tmp_path / "child.yaml").write_text("extends: bad.yaml\n")  # a broken base is named, not its child
    (tmp_path / "tab.yaml").write_text("a: 1\nb: [\tc\n")
    cases = (
        ("bad.yaml", f"{bad}:4:8: while parsing a flow sequence: expected ',' or ']', but got ':' at line 5, column 5"),
        ("child.yaml", f"{bad}:4:8: while parsing a flow sequence"),
        ("tab.yaml", f"{tmp_path / 'tab.yaml'}:2:5: while scanning for the next token: found character '\\t'"),
    )
    for name, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(tmp_path / name)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"contrastseg: error: {message}") and err.count("\n") == 1, err


def test_short_config_flag_and_spaced_shorthands_resolve(capsys) -> None:
    """``-c FILE`` (jsonargparse's alias) resolves ``extends`` like ``--config``; ``--contrast.x VALUE`` like
    ``--contrast.x=VALUE``."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(REPO / "experiments/quickstart_contrastive.yaml"), "--contrast.temperature", "0.2",
              "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["trainer"]["logger"]["init_args"]["name"] == "quickstart_contrastive"
    term = next(t for t in resolved["model"]["losses"] if t["class_path"].endswith("MultiScaleContrast"))
    assert term["init_args"]["temperature"] == 0.2


def test_broken_yaml_in_a_term_shorthand_is_named(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*QUICK, "--contrast.scale_weights=[1,2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("contrastseg: error: --contrast.scale_weights: value '[1,2' is not valid YAML")
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("flag", ["--config", "-c"])
def test_a_term_shorthand_before_a_config_is_refused(capsys, flag: str) -> None:
    """A later config may set model.losses again and drop the shorthand's edit: a one-line error instead."""
    config = str(REPO / "experiments/quickstart_contrastive.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--contrast.temperature=0.2", flag, config, "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"contrastseg: error: --contrast.temperature comes before --config {config}"), err
    assert err.count("\n") == 1, err


def test_missing_data_root_is_one_line_error(tmp_path: Path) -> None:
    err = _one_line_error(*QUICK, "--data=contrastseg.data.FolderDataModule",
                          f"--data.root={tmp_path / 'nowhere'}", "--data.num_classes=3")
    assert f"data root '{tmp_path / 'nowhere'}' does not exist" in err


def test_num_classes_disagreeing_with_labels(tmp_path: Path, camvid_root: Path) -> None:
    err = _one_line_error(*QUICK, "--data=contrastseg.data.FolderDataModule", f"--data.root={camvid_root}",
                          "--data.num_classes=5", "--data.label_map={11: 255}", "--data.num_workers=0",
                          "--trainer.fast_dev_run=1")
    assert "label value" in err and "outside 0..4" in err and "annot/" in err


def test_quickstart_fast_dev_run_through_entry_point(tmp_path: Path) -> None:
    result = _run(*QUICK, "--trainer.fast_dev_run=2", "--data.init_args.num_workers=0",
                  f"--trainer.default_root_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mIoU" in result.stdout  # the per-class table is printed
    assert "sign" in result.stdout


def test_contrastive_fit_logs_every_term_and_saves_checkpoints(tmp_path: Path) -> None:
    result = _run("fit", "--config", str(REPO / "experiments" / "quickstart_contrastive.yaml"),
                  "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
                  "--trainer.log_every_n_steps=1", "--data.init_args.num_workers=0",
                  f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpts = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts), ckpts
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    terms = ["train/loss", "train/loss_ce", "train/loss_contrast", "train/loss_ms", "train/loss_cs",
             "train/loss_ms_s4", "train/loss_ms_s8", "train/loss_ms_s16", "train/loss_ms_s32",
             "train/loss_cs_4_32", "train/loss_cs_4_16"]
    logged = [r for r in rows if r.get("train/loss")]
    assert len(logged) == 3
    for row in logged:
        for key in terms:
            assert math.isfinite(float(row[key])), (key, row[key])
    assert float(logged[0]["train/loss_ms_s4"]) > 0
    # A CLI checkpoint reloads in plain Python (notebooks) with its config: model, terms and class names.
    from contrastseg import ContrastSegModule

    module = ContrastSegModule.load_from_checkpoint(next(tmp_path.rglob("last.ckpt")), map_location="cpu")
    assert module.class_names[0] == "sky" and [t.name for t in module.losses] == ["ce", "contrast"]
    assert len(module.losses[1].projectors) == 4


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_ddp_fast_dev_run_with_contrastive_terms(tmp_path: Path) -> None:
    # Lightning's DDP launcher re-executes the command line in a second process (gloo on CPU); SyncBatchNorm is
    # GPU-only in PyTorch, so it is not exercised here.
    result = _run("fit", "--config", str(REPO / "experiments" / "quickstart_contrastive.yaml"),
                  "--trainer.fast_dev_run=2", "--trainer.strategy=ddp", "--trainer.devices=2",
                  "--trainer.accelerator=cpu", "--data.init_args.num_workers=0", "--contrast.gather_distributed=true",
                  f"--trainer.default_root_dir={tmp_path}", timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr + result.stdout


def test_a_new_class_in_a_later_file_does_not_inherit_the_old_class_options(tmp_path: Path, capsys) -> None:
    (tmp_path / "base.yaml").write_text(
        "extends: " + str(REPO / "experiments" / "_defaults.yaml") + "\n"
        "model:\n  optimizer:\n    class_path: torch.optim.SGD\n    init_args: {lr: 0.01, weight_decay: 0.1}\n")
    (tmp_path / "adam.yaml").write_text(
        "extends: base.yaml\nmodel:\n  optimizer:\n    class_path: torch.optim.Adam\n    init_args: {lr: 0.001}\n")
    (tmp_path / "sgd.yaml").write_text("extends: base.yaml\nmodel:\n  optimizer:\n    init_args: {lr: 0.5}\n")
    resolved = {}
    for name in ("adam", "sgd"):
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(tmp_path / f"{name}.yaml"), "--print_config"])
        resolved[name] = yaml.safe_load(capsys.readouterr().out)["model"]["optimizer"]
    assert resolved["adam"]["class_path"] == "torch.optim.Adam"
    assert resolved["adam"]["init_args"]["lr"] == 0.001 and resolved["adam"]["init_args"]["weight_decay"] == 0
    assert resolved["sgd"]["init_args"]["lr"] == 0.5 and resolved["sgd"]["init_args"]["weight_decay"] == 0.1  # merged


@pytest.mark.parametrize("how", ["two --config files", "--key=Class", "--key.class_path=Class", "--key={class_path}"])
def test_a_new_class_drops_the_old_options_however_it_is_given(tmp_path: Path, capsys, how: str) -> None:
    """`--config base.yaml --config adam.yaml` gave Adam the quickstart AdamW's weight_decay and lr (the same file
    through `extends` did not); a command-line class did the same."""
    (tmp_path / "adam.yaml").write_text("model:\n  optimizer:\n    class_path: torch.optim.Adam\n")
    extra = {"two --config files": ["--config", str(tmp_path / "adam.yaml")],
             "--key=Class": ["--model.optimizer=torch.optim.Adam"],
             "--key.class_path=Class": ["--model.optimizer.class_path=Adam"],
             "--key={class_path}": ["--model.optimizer={class_path: torch.optim.Adam}"]}[how]
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"), *extra, "--print_config"])
    optimizer = yaml.safe_load(capsys.readouterr().out)["model"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.Adam"
    assert optimizer["init_args"]["weight_decay"] == 0 and optimizer["init_args"]["lr"] == 0.001  # Adam's defaults


def test_the_same_class_again_keeps_the_earlier_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"), "--model.optimizer=AdamW",
              "--print_config"])
    optimizer = yaml.safe_load(capsys.readouterr().out)["model"]["optimizer"]
    assert optimizer["init_args"]["weight_decay"] == 0.0001 and optimizer["init_args"]["lr"] == 0.002


def test_top_level_help_describes_contrastseg_and_every_command_in_one_line() -> None:
    """The top level said "Lightning Trainer command line tool" and cut `test`'s and `predict`'s descriptions
    mid-sentence."""
    from contrastseg.cli_help import _SUMMARIES

    result = _run("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "contrastseg: semantic segmentation" in text and "Lightning Trainer" not in text and "``" not in text
    for command, summary in _SUMMARIES.items():
        assert f"{command} {summary}" in text, command  # whole, not cut
    for command in ("check-data DATASET ROOT check a dataset", "collect RUNS... finished runs",
                    "compare --config A.yaml --config-b B.yaml --seeds S ... train two configs over seeds",
                    "predict-folder CKPT IMAGES OUTPUT label, colour and overlay files"):
        assert command in text, command


@pytest.mark.parametrize("command", ["fit", *(pytest.param(c, marks=pytest.mark.slow)  # the same parser: one by default
                                              for c in ("validate", "test", "predict"))])
def test_command_help_is_short_and_lists_our_classes(command: str) -> None:
    """fit --help printed 2,050 lines, 1,447 of them every torch.nn.Module subclass for model.net."""
    result = _run(command, "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) < 400, len(lines)
    text = " ".join(result.stdout.split())
    for ours in ("contrastseg.models.SegmentationModel", "contrastseg.losses.MultiScaleContrast",
                 "contrastseg.losses.CrossEntropy", "contrastseg.data.FolderDataModule", "contrastseg.optim.PolyLR"):
        assert ours in text, ours
    assert "torch.nn.Conv2d" not in text and "``" not in text


def test_a_run_prints_no_third_party_notices_and_a_line_per_steps_into_a_file(tmp_path: Path) -> None:
    """Lightning's litlogger tip, its stepping-batches note, the _pytree deprecation and W&B's "anonymous"
    warning were printed by every run; a progress bar written to a file (a SLURM log) was one line per epoch."""
    result = _run(*QUICK, "--config", str(REPO / "experiments" / "_wandb.yaml"), "--trainer.max_epochs=1",
                  "--data.init_args.num_train=8", "--data.init_args.num_val=2", "--data.init_args.batch_size=4",
                  "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0",
                  "--model.net.init_args.encoder.name=resnet18", "--trainer.log_every_n_steps=1",
                  f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    for noise in ("Tip:", "LeafSpec", "to estimate number of stepping batches", "anonymous", "git root"):
        assert noise not in output, noise
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("epoch 1/1  batch")]
    assert [ln.split()[3] for ln in lines] == ["1/2", "2/2"] and all("train/loss" in ln for ln in lines)
