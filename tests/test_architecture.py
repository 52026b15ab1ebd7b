"""The house rules of the source tree, checked statically: areas import only downwards, no import loops.

Layers, bottom to top: the core (everything not listed in ``LAYERS``, plus ``remote``); areas that
build on it (``retrieval``: Chroma, BM25, first stage, BEIR; ``llm``: LLM scorers); areas that
combine those (``integrations``: shared adapter code; ``server``; ``training``); ``cli``. A module
may import its own area or any layer below it, never one above nor a sibling area of its layer;
and no two modules may import each other, directly or through others (function-level imports
included).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = {
    "remote": 0,  # a scorer the core's Reranker builds for an http(s) URL: part of the core
    "retrieval": 1,
    "llm": 1,
    "integrations": 2,
    "server": 2,
    "training": 2,
    "cli": 3,
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "crossrank").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is not a dependency
                found.add(t)
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return 4  # the top package re-exports the API; ``python -m crossrank`` runs the CLI
    return LAYERS.get(parts[1], 0)


def test_areas_import_only_downwards() -> None:
    mods = _modules()
    bad = []
    for name, path in mods.items():
        for dep in _imports(name, path, set(mods)):
            if dep != "crossrank" and _layer(dep) > _layer(name):
                bad.append(f"{name} -> {dep}")
            if 0 < _layer(name) == _layer(dep) < 3 and dep.split(".")[1] != name.split(".")[1]:
                bad.append(f"{name} -> {dep} (sibling areas)")
    assert not bad, "imports that go up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_loops() -> None:
    mods = _modules()
    graph = {n: {d for d in _imports(n, p, set(mods)) if d != "crossrank"} for n, p in mods.items()}
    loops = []
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                loops.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d, [*stack, d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not loops, "import loops:\n" + "\n".join(loops)
