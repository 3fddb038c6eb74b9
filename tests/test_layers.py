"""The package reads top to bottom: a layer imports only the layers below it, and no two
packages import each other in a circle. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import bookpulse

SRC = Path(bookpulse.__file__).parent

# Bottom first. Units on one line form one layer: they may import each other, but not in a
# circle (the cycle check below), and nothing from a later line.
LAYERS = [
    ("__init__", "domain", "config", "errors"),
    ("specs",),
    ("book",),
    ("features", "labels"),
    ("synthetic",),
    ("model",),
    ("adapters",),
    ("jobs",),
    ("serving",),
    ("cli", "cli_tables"),
]
# Kept only for models registered before the layering (their pickle names it): it may import
# what it re-exports, and nothing may import it.
COMPAT = "training"
LEVEL = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """bookpulse.model.core -> model; bookpulse -> __init__; bookpulse.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every bookpulse module `path` imports, anywhere in the file."""
    found = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bookpulse"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "bookpulse":
                continue
            if node.module == "bookpulse":  # from bookpulse import labels / __version__
                for a in node.names:
                    sub = SRC / a.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                    found.add(f"bookpulse.{a.name}" if is_module else "bookpulse")
            else:
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; write bookpulse.<...> in full")
    return found


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the modules that import it (for the message)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        me = module_name(path)
        mine = unit_of(me)
        for target in imports_of(path):
            other = unit_of(target)
            if other != mine:
                graph.setdefault(mine, {}).setdefault(other, []).append(me)
    return graph


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert units - set(LEVEL) - {COMPAT} == set(), "give each new package a layer in LAYERS"


def test_no_import_of_a_higher_layer() -> None:
    wrong = []
    for unit, targets in unit_graph().items():
        for other, where in targets.items():
            if other == COMPAT:
                wrong.append(f"{', '.join(where)} imports the compatibility package {COMPAT}")
            elif unit != COMPAT and LEVEL[other] > LEVEL[unit]:
                wrong.append(f"{', '.join(sorted(set(where)))} ({unit}) imports {other}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_cycle_between_packages() -> None:
    graph = {u: set(t) for u, t in unit_graph().items()}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its least unit
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "packages importing each other in a circle:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: an import hidden in a function is found (or the tests above could
    pass while the code has cycles)."""
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from bookpulse.jobs.score import score\n    import bookpulse.cli\n")
    assert imports_of(f) == {"bookpulse.jobs.score", "bookpulse.cli"}


def test_no_model_is_named_in_the_code() -> None:
    """A model is its spec: outside the simulator (and its summary) and the demo, no source
    file names a model of models/ as a string."""
    from bookpulse.specs import model_names

    names = model_names()
    allowed = {SRC / "synthetic", SRC / "jobs" / "demo.py"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if any(path == a or a in path.parents for a in allowed):
            continue
        text = path.read_text()
        found += [f"{path.relative_to(SRC)}: {n!r}" for n in names if f'"{n}"' in text]
    assert not found, "model names in the code:\n" + "\n".join(found)
