"""The package's layering, read from its source: core <- runtime <- analysis <- cli, bench beside cli, and the
Python API (``ef21_mpi.api``) above runtime and analysis, imported only by the package's ``__init__``.

Every ``import`` and ``from ... import`` anywhere in a module counts, inside functions too (a lazy import is
still a dependency). Run with ``-s`` to see the graph, one line per module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "ef21_mpi"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    """The absolute name of a (possibly relative) ``from`` import."""
    if level == 0:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports; ``from pkg import x`` is ``pkg.x`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            # `import ef21_mpi.core.data` names the module; an attribute path falls back to its module
            while target and target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name and target.split(".")[0] == PACKAGE:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer(module: str) -> str:
    """``core``, ``runtime``, ``analysis``, ``cli``, ``bench``, or the module itself at the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else module


def edges(source_layer: str, forbidden) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if layer(m) == source_layer
                  for d in sorted(deps) if forbidden(d))


def test_print_graph():
    width = max(map(len, GRAPH))
    print()
    for module in sorted(GRAPH):
        print(f"{module:<{width}} -> {', '.join(sorted(GRAPH[module])) or '-'}")
    assert len(GRAPH) > 20  # the walk found the package


def find_cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return components


def test_no_import_cycle():
    cycles = find_cycles()
    detail = ["  " + "; ".join(f"{m} -> {', '.join(sorted(GRAPH[m] & set(c)))}" for m in c) for c in cycles]
    assert not cycles, "import cycles (module -> its imports inside the cycle):\n" + "\n".join(detail)


def test_core_imports_only_core():
    """Not even ef21_mpi.errors: the core raises plain ValueErrors, which the door words for the user."""
    bad = edges("core", lambda d: layer(d) != "core")
    assert not bad, "core imports from outside core:\n  " + "\n  ".join(bad)


def test_runtime_imports_no_layer_above_it():
    bad = edges("runtime", lambda d: layer(d) in ("cli", "analysis", "bench"))
    assert not bad, "runtime imports cli, analysis or bench:\n  " + "\n  ".join(bad)


def test_analysis_imports_neither_cli_nor_bench():
    bad = edges("analysis", lambda d: layer(d) in ("cli", "bench"))
    assert not bad, "analysis imports cli or bench:\n  " + "\n  ".join(bad)


def test_only_cli_imports_bench():
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if layer(m) not in ("bench", "cli")
                 for d in sorted(deps) if layer(d) == "bench")
    assert not bad, "bench imported from outside bench and cli:\n  " + "\n  ".join(bad)


def test_bench_imports_no_cli():
    bad = edges("bench", lambda d: layer(d) == "cli")
    assert not bad, "bench imports the command line:\n  " + "\n  ".join(bad)


def test_api_sits_above_runtime_and_analysis():
    """``ef21_mpi.api`` may use core, runtime and analysis, never cli or bench; only ``ef21_mpi`` imports it."""
    bad = edges("api", lambda d: layer(d) in ("cli", "bench"))
    assert not bad, "the Python API imports cli or bench:\n  " + "\n  ".join(bad)
    importers = sorted(m for m, deps in GRAPH.items() if "ef21_mpi.api" in deps)
    assert importers == ["ef21_mpi"], f"only the package's __init__ may import ef21_mpi.api, not {importers}"


def test_cli_modules_import_no_other_cli_module():
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if layer(m) == "cli" and m != "ef21_mpi.cli.main"
                 for d in sorted(deps) if layer(d) == "cli")
    assert not bad, "a command module imports another command module:\n  " + "\n  ".join(bad)


def test_no_argparse_below_cli():
    bad = sorted(name for name, path in MODULES.items() if layer(name) in ("core", "runtime", "analysis")
                 and "argparse" in {a.name for n in ast.walk(ast.parse(path.read_text()))
                                    if isinstance(n, ast.Import) for a in n.names})
    assert not bad, "argparse below the command line: " + ", ".join(bad)


def test_modules_are_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    big = sorted(f"{name}: {n} lines" for name, n in sizes.items() if n > MAX_LINES)
    assert not big, f"modules over {MAX_LINES} lines:\n  " + "\n  ".join(big)


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The walker itself: imports inside functions and relative imports are edges."""
    assert _resolve("b", 1, "ef21_mpi.cli.main", False) == "ef21_mpi.cli.b"
    assert _resolve("", 2, "ef21_mpi.cli.main", False) == "ef21_mpi"
    assert _resolve("x", 1, "ef21_mpi.cli", True) == "ef21_mpi.cli.x"
    # `cmd_run` imports the session inside the function
    assert "ef21_mpi.runtime.session" in GRAPH["ef21_mpi.cli.run"]
    # `from ef21_mpi.cli import plot` is an edge to the module ef21_mpi.cli.plot
    assert "ef21_mpi.cli.plot" in GRAPH["ef21_mpi.cli.main"]
