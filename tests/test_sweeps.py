"""Every W&B sweep combination becomes CLI arguments that parse and land in the resolved config."""

import itertools
import json
from pathlib import Path

import pytest
import yaml

from contrastseg.cli import main

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def _wandb_arg(key: str, value) -> str:
    """How `wandb agent` renders ${args}: --key=value, lists as JSON."""
    return f"--{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"


def _combinations(sweep: dict):
    params = sweep["parameters"]
    keys = sorted(params)
    for values in itertools.product(*(params[k]["values"] for k in keys)):
        yield dict(zip(keys, values))


@pytest.mark.parametrize("sweep_file", [pytest.param(p, marks=pytest.mark.slow) if p.stem == "contrast_design" else p
                                        for p in SWEEPS], ids=lambda p: p.stem)
def test_every_combination_parses(sweep_file: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    sweep = yaml.safe_load(sweep_file.read_text())
    command = sweep["command"]
    assert command[0] == sweep["program"] == "contrastseg" and command[1] == "fit" and "${args}" in command
    at = command.index("${args}")
    for combo in _combinations(sweep):
        args = [*command[1:at], *(_wandb_arg(k, v) for k, v in combo.items()), *command[at + 1:], "--print_config"]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code in (0, None), (combo, capsys.readouterr().err)
        resolved = yaml.safe_load(capsys.readouterr().out)
        if "experiments/_wandb.yaml" in command:  # every run logs to W&B, whatever the experiment file says
            assert resolved["trainer"]["logger"]["class_path"].endswith("WandbLogger"), combo
            assert any(c["class_path"].endswith("WandbMedia") for c in resolved["trainer"]["callbacks"]), combo
        for key, value in combo.items():
            if key == "config":  # a whole experiment file: its run name lands in the logger
                expected = yaml.safe_load((REPO / value).read_text())["trainer"]["logger"]["init_args"]["name"]
                assert resolved["trainer"]["logger"]["init_args"]["name"] == expected, value
            elif key.startswith("contrast."):
                term = next(t for t in resolved["model"]["losses"] if t["class_path"].endswith("MultiScaleContrast"))
                assert term["init_args"][key.split(".", 1)[1]] == value, (key, value)
            else:
                assert resolved[key] == value, (key, value)
