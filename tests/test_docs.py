"""Docs that cannot rot: every ```python and ```bash block of the README and docs/ runs, offline.

Each page's runnable blocks run in order in one fresh process (Python blocks share one namespace,
bash blocks run with ``bash -e -o pipefail``), in a scratch folder laid out like the repository
root (``examples/``, ``benchmarks/``, ``src/``, ``adapters/`` linked; ``docs/`` and ``README.md``
copied; ``../shared`` linked beside it), with ``CROSSRANK_MODEL`` = the trained model in
``../shared``, ``CROSSRANK_DB`` = a scratch Chroma folder for the page and ``HF_HUB_OFFLINE=1``.
Blocks marked ``<!-- not-run: REASON -->`` are skipped; ``<!-- reduced: ARGS -->`` appends ARGS to
the block's ``crossrank`` commands (long evals and benchmarks run on a few queries). The
convention is ``docs/contributing.md`` ("Documentation") and ``tests/docs_blocks.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import REPO, Block, MarkerError, blocks, doc_files, reduce_bash

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE_TIMEOUT_S = 900

# Runs inside the scratch folder: executes one page's blocks in order; the first failure names its block.
_DRIVER = r"""
import json, subprocess, sys, time, traceback
blocks = json.load(open(sys.argv[1]))
ns = {"__name__": "__main__"}
for b in blocks:
    print(f"=== {b['where']} ({b['lang']}) ===", flush=True)
    t = time.perf_counter()
    try:
        if b["lang"] == "python":
            exec(compile(b["code"], b["where"], "exec"), ns)
        else:
            subprocess.run(["bash", "-e", "-o", "pipefail", "-c", b["code"]], check=True)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {b['where']}", flush=True)
        sys.exit(1)
    print(f"--- {b['where']}: {time.perf_counter() - t:.1f} s", flush=True)
print("ALL BLOCKS RAN")
"""


def _runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.runs]


def _pages() -> list[Path]:
    return [p for p in doc_files() if _runnable(p)]


def test_every_block_is_marked_or_runnable() -> None:
    """Markers parse (no unknown comment before a fence, every not-run has a reason), and the docs
    do run something: a page could not silently mark everything not-run without this count dropping."""
    found = {p: blocks(p) for p in doc_files()}
    runnable = [b for bs in found.values() for b in bs if b.runs]
    skipped = [b for bs in found.values() for b in bs if b.marker == "not-run"]
    assert len(runnable) >= 30, f"only {len(runnable)} runnable blocks"
    assert all(b.argument for b in skipped)
    assert {p.name for p in _pages()} >= {"README.md", "getting-started.md", "frameworks.md", "serving.md"}


def test_marker_rules(tmp_path: Path) -> None:
    """A typo in a marker, a not-run without a reason, or reduced on a Python block is an error."""
    page = tmp_path / "page.md"
    cases = {
        "<!-- not run: typo -->\n```bash\ntrue\n```\n": "unknown marker",
        "<!-- not-run: -->\n```bash\ntrue\n```\n": "needs a reason",
        "<!-- reduced: --limit 1 -->\n```python\npass\n```\n": "bash blocks only",
    }
    for text, message in cases.items():
        page.write_text(text)
        with pytest.raises(MarkerError, match=message):
            blocks(page)
    page.write_text("<!-- reduced: --limit 2 -->\n```bash\ncrossrank eval d \\\n  --first-stage dense  # x\n```\n")
    (b,) = blocks(page)
    assert reduce_bash(b.code, b.argument).strip() == "crossrank eval d --first-stage dense --limit 2  # x"


@pytest.fixture(scope="session")
def docs_sandbox(tmp_path_factory: pytest.TempPathFactory, shared_model: Path, scifact_dir: Path) -> Path:
    """A scratch folder laid out like the repository root, with ``../shared`` beside it."""
    root = tmp_path_factory.mktemp("docs-sandbox")
    (root / "shared").symlink_to(shared_model.parents[1], target_is_directory=True)
    assert (root / "shared" / "data" / scifact_dir.name).is_dir()
    repo = root / "repo"
    repo.mkdir()
    for name in ("examples", "benchmarks", "src", "adapters"):
        (repo / name).symlink_to(REPO / name, target_is_directory=True)
    shutil.copytree(REPO / "docs", repo / "docs", ignore=shutil.ignore_patterns("assets", "*.py"))
    (repo / "docs" / "assets").mkdir()
    shutil.copy(REPO / "README.md", repo / "README.md")
    # docs/late-interaction.md's ./colbert-student: a tiny random multi-vector model (../shared has none)
    from crossrank.late.testing import make_tiny_multi_vector

    make_tiny_multi_vector(repo / "colbert-student")
    return repo


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_page_blocks_run(page: Path, docs_sandbox: Path, shared_model: Path, tmp_path: Path) -> None:
    todo = [
        {"where": b.where, "lang": b.lang, "code": reduce_bash(b.code, b.argument) if b.marker == "reduced" else b.code}
        for b in _runnable(page)
    ]
    (tmp_path / "blocks.json").write_text(json.dumps(todo))
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = {
        **os.environ,
        "CROSSRANK_MODEL": "../shared/models/" + shared_model.name,
        "CROSSRANK_DB": str(tmp_path / "db"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CROSSRANK_EMBEDDER", None)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
        cwd=docs_sandbox,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a server a block started is stopped with the page
    )
    try:
        out, _ = proc.communicate(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"{page.name}: blocks still running after {PAGE_TIMEOUT_S} s\n{out[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
    assert proc.returncode == 0 and "ALL BLOCKS RAN" in out, out[-6000:]
    assert out.count("=== ") == len(todo)
