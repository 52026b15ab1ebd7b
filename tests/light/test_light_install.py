"""The light install (issue #27): the built wheel, no torch, serving a folder made by ``crossrank export``.

Runs only in the torch-free venv ``.ci/run`` builds (``CROSSRANK_LIGHT_EXPORT`` set); the main run
skips this module. Its references come from the full install, written by ``tests/light/reference.py``
in the first venv: ONNX Runtime fp32 and int8 scores of the *source* model on the full install's
own paths, and sentence-transformers' ``CrossEncoder.predict``. Here the exported folder must give
the fp32 scores within 1e-5 and the int8 scores identically, through the ``Reranker``, its async
and cached paths, both adapters, ``crossrank serve`` on loopback and ``crossrank bench``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("CROSSRANK_LIGHT_EXPORT"):
    pytest.skip("the light-install checks run in the torch-free venv of .ci/run", allow_module_level=True)

# After the skip: the main run collects this module without needing any of it.
from crossrank import Reranker
from crossrank.errors import BackendUnavailableError, NotExportedError

pytestmark = pytest.mark.integration

EXPORT = Path(os.environ["CROSSRANK_LIGHT_EXPORT"])
REF: dict[str, Any] = json.loads(Path(os.environ["CROSSRANK_LIGHT_REFERENCE"]).read_text())
QUERIES: list[dict[str, Any]] = REF["queries"]
FP32, INT8 = REF["scores"]["onnx-fp32"], REF["scores"]["onnx-int8"]
ST = REF["scores"]["sentence-transformers"]


def _close(got: list[float], want: list[float], tol: float) -> float:
    gap = max(abs(a - b) for a, b in zip(got, want, strict=True))
    assert gap <= tol, f"max |Δ| {gap:.2e} > {tol}"
    return gap


def test_nothing_heavy_is_installed() -> None:
    """So nothing cheats: torch, transformers and sentence-transformers cannot even be imported."""
    with pytest.raises(ModuleNotFoundError):
        import torch  # noqa: F401
    for name in ("torch", "transformers", "sentence_transformers", "scipy", "sklearn", "openvino"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed in the light venv"


def test_crossrank_is_the_built_wheel() -> None:
    import crossrank

    assert Path(crossrank.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), crossrank.__file__
    direct = importlib.metadata.distribution("crossrank").read_text("direct_url.json") or "{}"
    assert not json.loads(direct).get("dir_info", {}).get("editable"), "installed editable, not from the wheel"


def test_every_package_here_is_pinned_in_constraints() -> None:
    """constraints.txt is the full install's set: the light venv installs nothing outside it, at its versions."""
    import re

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    text = (Path(__file__).resolve().parents[2] / "constraints.txt").read_text()
    pins = {norm(n): v for n, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, flags=re.M)}
    # The venv's own setuptools comes with the interpreter (ensurepip), not from pip install.
    here = {norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    loose = {n: v for n, v in here.items() if n not in ("crossrank", "setuptools") and pins.get(n) != v}
    assert not loose, f"installed but not pinned (or at another version) in constraints.txt: {loose}"


def test_fp32_scores_equal_the_full_install() -> None:
    rr = Reranker(EXPORT, backend="onnx", quantize="fp32")
    for q, want, st in zip(QUERIES, FP32, ST, strict=True):
        got = rr.score(q["text"], q["docs"])
        assert all(type(s) is float for s in got)
        _close(got, want, 1e-5)
        _close(got, st, 1e-5)  # and sentence-transformers' own scores of the source model
    assert rr.backend_name == "onnx-fp32"


def test_int8_scores_are_identical_to_the_full_install() -> None:
    rr = Reranker(EXPORT, backend="onnx", quantize="int8")
    for q, want in zip(QUERIES, INT8, strict=True):
        assert rr.score(q["text"], q["docs"]) == want


def test_auto_tunes_then_ranks_scifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` measures the folder's paths on a first start (nothing exported), then ranks like its path."""
    from crossrank.scoring.engine import clear_engines

    monkeypatch.setenv("CROSSRANK_TUNE", "1")
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(tmp_path))
    clear_engines()
    rr = Reranker(EXPORT)
    ref = {"onnx-int8": INT8, "onnx-fp32": FP32}
    # ONNX Runtime's dynamic int8 scales activations per batch tensor, so a tuned batch size other
    # than the reference's moves int8 scores slightly and may swap near-ties; fp32 must match.
    tol = 1e-5 if rr.backend_name == "onnx-fp32" else 2e-2
    for i, q in enumerate(QUERIES[:3]):
        res = rr.rerank(q["text"], q["docs"], top_n=5)
        want = ref[rr.backend_name][i]
        picked = [want[r.index] for r in res]
        _close(picked, sorted(want, reverse=True)[:5], tol)  # the reference's top five, up to near-ties
        _close([r.score for r in res], picked, tol)
    assert (tmp_path / "tuning").is_dir() and not (tmp_path / "onnx").exists(), "tuned, and built nothing"
    clear_engines()


async def test_async_and_cache_give_the_same_scores() -> None:
    rr = Reranker(EXPORT, backend="onnx", quantize="int8", cache_size=1000)
    q = QUERIES[0]
    got = await rr.arerank(q["text"], q["docs"])
    again = rr.rerank(q["text"], q["docs"])
    assert [r.score for r in got] == [r.score for r in again] == sorted(INT8[0], reverse=True)
    assert again.stats.cache_hits == len(q["docs"]) and again.stats.pairs_scored == 0


def test_missing_extras_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match=r"crossrank\[openvino\]"):
        Reranker(EXPORT, backend="openvino").score("q", ["d"])
    with pytest.raises(NotExportedError, match=r"no torch weights"):
        Reranker(EXPORT, backend="torch")
    with pytest.raises(BackendUnavailableError, match=r"crossrank\[torch\]"):
        Reranker(REF["source"], backend="onnx", quantize="fp32").score("q", ["d"])  # a source model needs export
    out = subprocess.run(
        [sys.executable, "-m", "crossrank", "export", REF["source"], "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "crossrank[torch]" in out.stderr, out.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir()), "nothing written"


def test_adapters_rerank_with_the_exported_folder() -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from langchain_crossrank import CrossRankCompressor
    from llama_index.postprocessor.crossrank import CrossRankRerank

    rr = Reranker(EXPORT, backend="onnx", quantize="int8")
    q = QUERIES[1]
    best = sorted(INT8[1], reverse=True)[:3]
    docs = [Document(page_content=t, metadata={"id": i}) for i, t in zip(q["doc_ids"], q["docs"])]
    lc = CrossRankCompressor(reranker=rr, top_n=3).compress_documents(docs, q["text"])
    assert [d.metadata["relevance_score"] for d in lc] == best
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in q["docs"]]
    li = CrossRankRerank(reranker=rr, top_n=3).postprocess_nodes(nodes, query_bundle=QueryBundle(q["text"]))
    assert [n.score for n in li] == best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_crossrank_serve_answers_with_the_full_installs_scores(tmp_path: Path) -> None:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "crossrank", "serve", "--model", str(EXPORT), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--backend", "onnx", "--quantize", "int8"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become healthy in 120 s"
            time.sleep(0.2)
        q = QUERIES[2]
        body = {"query": q["text"], "documents": q["docs"], "top_n": 5}
        res = httpx.post(f"{url}/v1/rerank", json=body, timeout=60)
        assert res.status_code == 200, res.text
        want = INT8[2]
        order = sorted(range(len(want)), key=lambda j: (-want[j], j))[:5]
        got = res.json()["results"]
        assert [r["index"] for r in got] == order
        for r in got:
            assert r["relevance_score"] == pytest.approx(1 / (1 + math.exp(-want[r["index"]])), abs=1e-6)
        tei = httpx.post(f"{url}/rerank", json={"query": q["text"], "texts": q["docs"], "raw_scores": True}, timeout=60)
        assert tei.status_code == 200 and {r["index"]: r["score"] for r in tei.json()} == dict(enumerate(want))
        info = httpx.get(f"{url}/info", timeout=10).json()
        assert info["backend"] == "onnx-int8"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_crossrank_bench_runs_its_crossrank_rows(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "crossrank", "bench", "--model", str(EXPORT), "--dataset", REF["dataset"]]
    cmd += ["--workloads", "8x64", "--repeats", "1", "--fidelity-queries", "0", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "CROSSRANK_TUNE": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rows"]
    assert {r["method"] for r in rows} == {"auto", "onnx-fp32", "onnx-int8"}, "the crossrank rows this install runs"
