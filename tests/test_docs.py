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
    problems = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not problems, "\n".join(problems)

    # Every public name of every package is documented on its API page.
    undocumented = []
    for module_name, page in API.items():
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
