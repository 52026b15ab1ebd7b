"""The examples run as written, offline, against the shared trained model, using only the public API."""

from __future__ import annotations

import ast
import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import REPO, blocks

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
# What a user imports from crossrank: the names each public module lists in __all__, and the adapters.
PUBLIC_MODULES = ("crossrank", "crossrank.retrieval", "crossrank.llm", "crossrank.server", "crossrank.remote")
ADAPTERS = ("langchain_crossrank", "llama_index.postprocessor.crossrank")


def test_every_example_is_run() -> None:
    assert SCRIPTS == ["langchain_rag.py", "llamaindex_rag.py"], "add a new example's check to test_example_runs"


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_uses_only_the_public_api(script: str) -> None:
    """``from crossrank.<module> import name`` only where the module is public and lists the name in __all__."""
    bad = []
    for node in ast.walk(ast.parse((EXAMPLES / script).read_text())):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.startswith("crossrank.") and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "crossrank":
            if node.module not in PUBLIC_MODULES:
                bad.append(f"from {node.module} import ...")
                continue
            public = set(importlib.import_module(node.module).__all__)
            bad += [f"{node.module}.{a.name}" for a in node.names if a.name not in public]
        elif (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith(ADAPTERS)
            and node.module not in ADAPTERS
        ):
            bad.append(f"from {node.module} import ...")
    assert not bad, f"{script} uses names outside the public API: {bad}"


def documented_arguments() -> dict[str, list[str]]:
    """Each example's arguments as docs/frameworks.md shows the command (that block is not run by the
    docs test: this test runs it, so the page and the test cannot drift apart)."""
    found: dict[str, list[str]] = {}
    for block in blocks(REPO / "docs" / "frameworks.md"):
        for line in block.code.splitlines():
            words = shlex.split(line, comments=True)
            if "python" in words and words.index("python") + 1 < len(words):
                script = words[words.index("python") + 1]
                if script.startswith("examples/"):
                    found[script.removeprefix("examples/")] = words[words.index("python") + 2 :]
    return found


def test_the_docs_show_every_example() -> None:
    assert sorted(documented_arguments()) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, shared_model: Path, embedder_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CROSSRANK_MODEL": str(shared_model), "CROSSRANK_EMBEDDER": str(embedder_path)}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *documented_arguments()[script], "--db", str(tmp_path / "db")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "retrieved by Chroma" in out.stdout and "reranked by" in out.stdout
    assert out.stdout.count("was #") == 3
