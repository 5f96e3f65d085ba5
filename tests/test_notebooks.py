"""Every notebook runs top to bottom with the small settings it ships with, and is committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_anchor_sampling", "03_feature_space"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    book = json.loads(path.read_text())
    code = [c for c in book["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), (
        f"{path.name} has outputs: clear them before committing (jupyter nbconvert --clear-output --inplace)")
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), "no settings cell"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    book = nbformat.read(path, as_version=4)
    # Runs land in the repository's git-ignored runs/ folder, as for a user; figures are not saved.
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 2, f"{path.name} drew {images} figure(s)"
