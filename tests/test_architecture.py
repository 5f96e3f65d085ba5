"""The package's layers, as docs/architecture.md draws them: a module imports only from lower layers.

Each part of ``contrastseg`` has a layer number; an import (at module level, inside a function or under
``TYPE_CHECKING``: the graph of ``tests/test_imports.py``) may only reach a lower layer or its own part, apart from
the few same-layer edges listed in :data:`SAME_LAYER`. A new file outside :data:`LAYERS` fails the test until it is
given a layer here and on the architecture page.
"""

from __future__ import annotations

from .test_imports import import_graph

# part (the first name below ``contrastseg``) -> layer; higher layers build on lower ones.
LAYERS = {
    # 0: the errors every layer raises.
    "errors": 0,
    # 1: leaves: nothing of contrastseg but the errors.
    "_compat": 1, "ops": 1, "optim": 1, "runs": 1, "quiet": 1, "sweep": 1, "cli_config": 1,
    # 2: building blocks that know nothing of each other.
    "models": 2, "data": 2, "evaluation": 2,
    # 3: the losses read the model's output (SegOutput) and, for class weights, the data statistics.
    "losses": 3,
    # 4: side jobs.
    "callbacks": 4,
    # 5: the LightningModule: model + loss terms + metrics + optimiser; it adds its default callbacks.
    "module": 5,
    # 6: what runs on top of a module or of finished runs.
    "viz": 6, "predict": 6, "resume": 6, "compare_report": 6, "compare": 6, "commands": 6, "cli_help": 6,
    "cli_parser": 6, "cli_save": 6,
    # 7: the command and the package's front door.
    "cli": 7, "__main__": 7, "": 7,
    # 8: measurements: may import anything, and nothing imports them.
    "benchmarks": 8,
}
# Allowed imports between different parts of one layer: (importer, imported).
SAME_LAYER = {
    ("__main__", "cli"),  # python -m contrastseg
    ("cli_help", "commands"),  # the help lists the commands' table
    ("cli_save", "resume"),  # the saved config is what a resume compares against
    ("compare", "compare_report"),
    ("predict", "viz"),  # colour palettes and overlays
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m in import_graph()}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS and on docs/architecture.md: {parts - set(LAYERS)}"


def violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import of ``graph`` that reaches a higher layer, or a same-layer part not in :data:`SAME_LAYER`."""
    wrong = []
    for module, targets in graph.items():
        for target, line in targets.items():
            a, b = _part(module), _part(target)
            if a == b or LAYERS[b] < LAYERS[a] or (a, b) in SAME_LAYER:
                continue
            wrong.append(f"{module}:{line} imports {target} (layer {LAYERS[a]} -> {LAYERS[b]})")
    return wrong


def test_imports_only_reach_lower_layers() -> None:
    wrong = violations(import_graph())
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(wrong)


def test_the_check_catches_upward_and_sideways_imports() -> None:
    graph = {
        "contrastseg.losses.base": {"contrastseg.models.segmentation": 3, "contrastseg.module": 7},
        "contrastseg.models.hrnet": {"contrastseg.data.base": 5, "contrastseg.ops": 2},
        "contrastseg.compare": {"contrastseg.compare_report": 9},
    }
    assert violations(graph) == [
        "contrastseg.losses.base:7 imports contrastseg.module (layer 3 -> 5)",
        "contrastseg.models.hrnet:5 imports contrastseg.data.base (layer 2 -> 2)",
    ]
