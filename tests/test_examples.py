"""The examples run as written, offline, against the shared trained model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["langchain_rag.py", "llamaindex_rag.py"])
def test_example_runs(script: str, shared_model: Path, embedder_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CROSSRANK_MODEL": str(shared_model), "CROSSRANK_EMBEDDER": str(embedder_path)}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--db", str(tmp_path / "db")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "retrieved by Chroma" in out.stdout and "reranked by" in out.stdout
    assert out.stdout.count("was #") == 3
