"""The documentation: the strict Sphinx build (warnings are errors), every public name in the API reference, the
notebooks rendered with their figures, and the README's links."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The packages whose public names (``__all__``) the API reference documents, and the page of each.
API = {
    "contrastseg": "api/contrastseg.html", "contrastseg.losses": "api/losses.html",
    "contrastseg.models": "api/models.html", "contrastseg.data": "api/data.html",
    "contrastseg.evaluation": "api/evaluation.html", "contrastseg.callbacks": "api/callbacks.html",
    "contrastseg.viz": "api/viz.html", "contrastseg.optim": "api/optim.html", "contrastseg.errors": "api/errors.html",
}


def test_readme_links_point_at_files_in_the_repository() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
    assert "shared/data" not in readme


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    html = tmp_path / "html"
    env = {**os.environ, "CONTRASTSEG_DOCS_EXECUTE": "force"}  # the notebooks run, so their figures are there
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(REPO / "docs"), str(html)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1700)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # Sphinx's warnings and errors (-W makes them fail the build too); the Jupyter kernel's own notices that myst-nb
    # passes through (e.g. ipykernel's "running over TCP without encryption") are not the documentation's.
    problems = [line for line in output.splitlines() if ("WARNING" in line or "ERROR" in line)
                and not line.startswith("[IPKernelApp]")]
    assert not problems, "\n".join(problems)

    # Every public name of every package is documented on its API page.
    undocumented = []
    for module_name in API:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items()
            if not n.startswith("_") and isinstance(v, type) and v.__module__ == module_name]
        for name in names:
            # contrastseg re-exports the exceptions of contrastseg.errors, which documents them.
            errors = module_name == "contrastseg" and getattr(getattr(module, name), "__module__", "") == "contrastseg.errors"
            owner = "contrastseg.errors" if errors else module_name
            if f'id="{owner}.{name}"' not in (html / API[owner]).read_text():
                undocumented.append(f"{module_name}.{name}")
    assert not undocumented, f"public names missing from the API reference: {undocumented}"

    # The notebooks are rendered with their outputs: each draws at least two figures.
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        page = (html / "notebooks" / f"{notebook.stem}.html").read_text()
        figures = len(re.findall(r'<img [^>]*src="\.\./_images/', page))
        assert figures >= 2, f"{notebook.name}: {figures} figure(s) in the rendered page"


def test_readme_training_loop_example_runs_and_trains_the_projectors() -> None:
    """The README's "loss in your own training loop" snippet, run as written on a tiny model with 4 stages."""
    import torch
    from torch import nn

    readme = (REPO / "README.md").read_text()
    section = readme.split("## The loss in your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)

    class FourStages(nn.Module):
        """Stages of 48, 96, 192 and 384 channels at strides 4, 8, 16 and 32, as the snippet's projectors expect."""

        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride=s, padding=1) for c_in, c_out, s in
                                        ((3, 48, 4), (48, 96, 2), (96, 192, 2), (192, 384, 2)))
            self.classifier = nn.Conv2d(48, 4, 1)

        def forward(self, x):
            features = []
            for stage in self.stages:
                x = stage(x)
                features.append(x)
            logits = nn.functional.interpolate(self.classifier(features[0]), scale_factor=4, mode="bilinear")
            return logits, features

    torch.manual_seed(0)
    # Two images of two regions each (4 classes), so that every (image, class) pair keeps 8 pixels on the coarsest
    # stage (4 x 4), above the sampler's min_views_per_class of 5; a corner is ignored.
    grid = torch.arange(128)
    labels = torch.stack([(grid[None, :] >= 64).long().expand(128, 128),
                          2 + (grid[:, None] >= 64).long().expand(128, 128)]).clone()
    labels[:, :8, :8] = 255
    namespace = {"model": FourStages(), "loader": [(torch.randn(2, 3, 128, 128), labels)] * 2}
    exec(compile(code, "README.md", "exec"), namespace)
    out = namespace["out"]
    assert torch.isfinite(namespace["loss"]) and all(term > 0 for term in [*out.per_scale, *out.cross_scale])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in namespace["projectors"].parameters())


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_every_python_example_in_the_docs_compiles() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pages = [page for page in pages if "_build" not in page.parts]
    compiled = 0
    for page in pages:
        for code in _blocks(page.read_text(), "python"):
            compile(code, str(page.relative_to(REPO)), "exec")  # a SyntaxError names the page
            compiled += 1
    assert compiled >= 4


def test_the_own_data_config_checks_camvid_as_written(camvid_root: Path, tmp_path: Path) -> None:
    """docs/your_data.md's config, pointed at CamVid, passes check-data (its label_map and class list are right)."""
    from contrastseg.cli import main

    config = _blocks((REPO / "docs" / "your_data.md").read_text(), "yaml")[0]
    config = config.replace("extends: experiments/_defaults.yaml", f"extends: {REPO / 'experiments' / '_defaults.yaml'}")
    config = config.replace("root: /data/camvid", f"root: {camvid_root}")
    (tmp_path / "my_data.yaml").write_text(config)
    with pytest.raises(SystemExit) as done:
        main(["check-data", "--config", str(tmp_path / "my_data.yaml")])
    assert done.value.code in (0, None)
