"""The public API: what each package exports, the errors users catch, and the one version string."""

import importlib
import inspect
import re
from importlib import metadata
from pathlib import Path

import pytest

import contrastseg
from contrastseg import errors

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["contrastseg", "contrastseg.losses", "contrastseg.data", "contrastseg.models", "contrastseg.evaluation",
            "contrastseg.callbacks", "contrastseg.viz"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(set(module.__all__)) == sorted(module.__all__), f"{name}.__all__ lists a name twice"
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_every_error_is_exported_from_the_package() -> None:
    error_classes = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, Exception)}
    assert error_classes <= set(contrastseg.__all__)
    assert all(getattr(contrastseg, n) is getattr(errors, n) for n in error_classes)


@pytest.mark.parametrize("package,internal", [
    ("contrastseg.losses", ["gather_pixels", "PresampledAnchors", "downsample_labels", "l2_normalize"]),
    ("contrastseg.data", ["check_mask_values", "render_scene"]),
])
def test_internals_stay_in_their_own_modules(package: str, internal: list[str]) -> None:
    module = importlib.import_module(package)
    assert not set(internal) & set(module.__all__)
    assert not [n for n in internal if hasattr(module, n)]


def test_the_version_is_the_installed_metadata_of_pyproject() -> None:
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert contrastseg.__version__ == metadata.version("contrastseg") == declared
