"""Import contracts (DESIGN.md §3, docs/architecture.md): the package graph runs one way, and no package has a cycle.

Every import counts, at module level or inside a function (a lazy import upward is still a dependency upward).
Reading the AST needs no import of llmspeed, so a violation fails here even in code no other test reaches.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src" / "llmspeed"
FRONT_ENDS = {"serving", "bench", "profiling", "evaluation", "export", "cli", "auto"}
# the llm level: llmspeed.load / LLM, and the compile child that rebuilds a model through llmspeed.load
LLM = {"llm", "compile_worker"}
# package -> the llmspeed packages it may NOT import (besides itself); nobody but cli imports cli
FORBIDDEN: dict[str, set[str]] = {
    "util": {"kernels", "layers", "data", "models", "runtime", "compress", *LLM, *FRONT_ENDS},
    "kernels": {"layers", "data", "models", "runtime", "compress", *LLM, *FRONT_ENDS},
    "layers": {"data", "models", "runtime", "compress", *LLM, *FRONT_ENDS},
    "data": {"kernels", "layers", "models", "runtime", "compress", *LLM, *FRONT_ENDS},
    "models": {"runtime", "compress", *LLM, *FRONT_ENDS},
    "runtime": {"compress", *LLM, *FRONT_ENDS},
    "compress": {"runtime", *LLM, *FRONT_ENDS},
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _type_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:` (they never run, so they cannot form a cycle)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for b in node.body for n in ast.walk(b) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def _imports(name: str, path: Path, runtime_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported llmspeed module) for every import in the file, resolved to a module where it is one.
    `runtime_only` leaves out imports under `if TYPE_CHECKING:`."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # `from llmspeed.x import y`: the module x.y if it is one, else x
                found.append((node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base))
    return [(line, m) for line, m in found if m == "llmspeed" or m.startswith("llmspeed.")]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_rule() -> None:
    packages = {_package(m) for m in MODULES} - {""}
    assert packages - set(FORBIDDEN) <= {*LLM, *FRONT_ENDS}, "a new package needs its place in FORBIDDEN"


@pytest.mark.parametrize("package", sorted({_package(m) for m in MODULES} - {""}))
def test_imports_point_downward(package: str) -> None:
    bad = []
    for name, path in MODULES.items():
        if _package(name) != package:
            continue
        for line, target in _imports(name, path):
            tp = _package(target)
            if tp == package:
                continue
            if tp in FORBIDDEN.get(package, set()) or (tp == "cli" and package != "cli"):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycles_inside_a_package() -> None:
    """Imports that run (module level or lazy); type-only imports under TYPE_CHECKING do not count."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for _, target in _imports(name, path, runtime_only=True):
            if _package(target) == _package(name) and target != name and target in MODULES:
                graph[name].add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(MODULES):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The contract can fail: an upward import in a layers-like file is found, lazy or not."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from llmspeed.runtime.engine import Engine\n    return Engine\n")
    assert _imports("llmspeed.layers.x", f) == [(2, "llmspeed.runtime.engine")]
