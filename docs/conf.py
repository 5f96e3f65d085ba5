"""Sphinx configuration of the contrastseg documentation.

    sphinx-build -W --keep-going -b html docs docs/_build/html

Markdown pages are MyST; the notebooks (``docs/notebooks`` is a link to ``notebooks/``) are executed at build time
by myst-nb with the small settings they ship with, so their figures are always those of the code being documented.
``CONTRASTSEG_DOCS_EXECUTE=off`` skips the execution (a quick build of the text; notebook pages then show no
outputs), ``cache`` reuses outputs while a notebook's code is unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import contrastseg  # noqa: E402

project = "contrastseg"
author = "the contrastseg authors"
copyright = "2026, the contrastseg authors"  # noqa: A001
version = release = contrastseg.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "make_figures.py", "study"]  # study/: included
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# MyST
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# Notebooks
nb_execution_mode = os.environ.get("CONTRASTSEG_DOCS_EXECUTE", "force")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# API reference: Google-style docstrings, documented names are each package's __all__.
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# Lightning's hooks that a class overrides keep Lightning's docstrings there (with Lightning's own roles); the
# reference shows what contrastseg documents.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields are described in its docstring's Attributes; skip the generated field aliases."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def _drop_builtin_docstrings(app, what, name, obj, options, lines):
    """A module constant (a tuple, a dict) has no docstring of its own: autodoc would show its type's."""
    if what == "data" and type(obj).__module__ == "builtins":
        lines.clear()


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings)

# Every cross-reference inside contrastseg must resolve. Without network access at build time there is no
# intersphinx, so names from other packages (torch, numpy, Lightning, the standard library) stay plain text.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|collections|pathlib|lightning|rich|typing|matplotlib|PIL|jsonargparse)(\..*)?"),
    (r"py:.*", r"(nn|np|F)\..*"),  # annotations written with the usual import aliases
    (r"py:.*", r"(Tensor|Module|Figure|Axes|Path|Optimizer|OptimizerCallable|LRSchedulerCallable)"),
    (r"py:class", r"Transform"),  # contrastseg.data.transforms.Transform: any callable(image=, mask=) -> dict
    # Internal (in no package's __all__) but named in public signatures and docstrings: the anchors the loss
    # draws ahead of the forward pass, and the row normalisation behind the InfoNCE's ``normalized`` inputs.
    (r"py:class", r"(contrastseg\.losses\.(sampling|multiscale)\.)?(PendingAnchors|PresampledAnchors)"),
    (r"py:func", r"(contrastseg\.losses\.(infonce|infonce_torch)\.)?l2_normalize"),
]

html_theme = "furo"
html_title = f"contrastseg {release}"
