"""The package layering, checked from the source: every ``import`` of every lowbit module (including the
imports inside functions, relative imports resolved) must point down the floors, and the packages /
top modules must import each other without a cycle.

Floors (docs/architecture.md), lowest first; a unit may import its own floor (without cycles) or lower:

    formats -> ops (+ the ``lowbit`` facade) -> nn -> {train, ptq, search, cost, export, distributed}
            -> experiments -> report -> cli

``models``, ``data`` and ``checkpoint`` sit below nn beside the quantization floors and know nothing of
quantization: they import only each other; every floor from nn up may import them. ``registry`` (the one
registry helper) imports nothing of lowbit and every unit may import it.
"""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

import lowbit

ROOT = Path(lowbit.__file__).parent
FLOORS = [("formats",), ("ops", "lowbit"), ("nn",), ("train", "train_amp", "train_checkpoint", "train_usage", "ptq", "search", "cost", "export", "distributed"),
          ("experiments",), ("report",), ("cli",)]
BASE = ("models", "data", "checkpoint")        # below nn, beside formats/ops: no quantization
UTIL = ("registry",)                           # imports nothing of lowbit; anyone may import it
FLOOR = {u: i for i, units in enumerate(FLOORS) for u in units}
NN = FLOOR["nn"]


def _units(root: Path) -> set:
    return {p.stem if p.is_file() else p.name for p in root.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def unit_of(module: str, units: set) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in units else "lowbit"


def imports(source: str, module: str, is_pkg: bool) -> list[tuple[str, int]]:
    """(imported lowbit module, line) for every import statement anywhere in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out += [(f"{target}.{a.name}" if target == "lowbit" else target, node.lineno) for a in node.names]
    return [(t, line) for t, line in out if t == "lowbit" or t.startswith("lowbit.")]


def edges(root: Path = ROOT) -> dict:
    """{(from unit, to unit): [where, ...]} over every module under ``root``."""
    units = _units(root)
    found = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        module, is_pkg = module_name(path, root)
        u = unit_of(module, units)
        for target, line in imports(path.read_text(), module, is_pkg):
            v = unit_of(target, units)
            if u != v:
                found[(u, v)].append(f"{path.relative_to(root.parent)}:{line} imports {target}")
    return found


def violations(found: dict) -> list[str]:
    bad = []
    for (u, v), where in sorted(found.items()):
        if u in UTIL:
            ok = False
        elif v in UTIL:
            ok = True
        elif u in BASE:
            ok = v in BASE
        elif v in BASE:
            ok = FLOOR.get(u, -1) >= NN
        else:
            ok = u in FLOOR and v in FLOOR and FLOOR[v] <= FLOOR[u]
        if not ok:
            bad.append(f"{u} -> {v}: {where[0]}")
    return bad


def cycles(found: dict) -> list[list[str]]:
    graph = defaultdict(set)
    for u, v in found:
        graph[u].add(v)
    out, state = [], {}

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                out.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2
    for u in sorted(graph):
        if u not in state:
            visit(u, [])
    return out


def test_every_unit_has_a_floor():
    assert _units(ROOT) | {"lowbit"} <= set(FLOOR) | set(BASE) | set(UTIL), \
        "a new package needs a floor in FLOORS, BASE or UTIL"


def test_imports_follow_the_floors():
    bad = violations(edges())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycle_between_packages():
    found = edges()
    loops = cycles(found)
    assert not loops, "import cycles: " + "; ".join(
        " -> ".join(c) + f" ({found[(c[0], c[1])][0]})" for c in loops)


def test_the_checker_catches_what_it_must(tmp_path):
    """A fake tree with an upward import inside a function, a relative import into a sibling that closes a
    cycle, and a model that imports quantization: all three are reported."""
    pkg = tmp_path / "lowbit"
    for d in ("ptq", "cost", "nn", "models"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "nn" / "x.py").write_text("def f():\n    from lowbit.ptq import y\n")
    (pkg / "ptq" / "a.py").write_text("from ..cost import b\n")
    (pkg / "cost" / "b.py").write_text("from lowbit.ptq.a import z\n")
    (pkg / "models" / "m.py").write_text("import lowbit.nn.x\n")
    found = edges(pkg)
    assert ("nn", "ptq") in found and ("ptq", "cost") in found and ("models", "nn") in found
    bad = violations(found)
    assert any(b.startswith("nn -> ptq") for b in bad) and any(b.startswith("models -> nn") for b in bad)
    assert not any(b.startswith("ptq -> cost") for b in bad)            # siblings may import each other...
    assert any(set(c) == {"ptq", "cost"} for c in cycles(found))        # ...but not in a cycle


@pytest.mark.parametrize("module,is_pkg,line,want", [
    ("lowbit.cli.ptq", False, "from .source import x", "lowbit.cli.source"),
    ("lowbit.search", True, "from . import ilp", "lowbit.search"),
    ("lowbit.search.plots", False, "from ..report import page", "lowbit.report"),
    ("lowbit.cli", True, "from lowbit import __version__", "lowbit.__version__"),
])
def test_relative_imports_resolve(module, is_pkg, line, want):
    assert imports(line, module, is_pkg)[0][0] == want
