"""The ONNX backend: parity with torch, the export cache, and corrupt-cache recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossrank import Candidate, Reranker
from crossrank.backends import export
from crossrank.backends.onnx_backend import int8_model_variant
from crossrank.retrieval.beir import BeirDataset
from crossrank.scoring.engine import clear_engines

DOCS = ["the python snake is a reptile", "python code is a program language", "aspirin dose and heart risk"] * 3


def test_onnx_fp32_matches_torch_tiny(tiny_model: Path) -> None:
    torch_scores = Reranker(tiny_model, backend="torch").score("python snake", DOCS)
    onnx_scores = Reranker(tiny_model, backend="onnx", quantize="fp32").score("python snake", DOCS)
    assert onnx_scores == pytest.approx(torch_scores, abs=1e-4)


def test_export_cache_reused_and_corruption_rebuilt(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_engines()
    rr = Reranker(tiny_model, backend="onnx", quantize="int8")
    first = rr.score("python", DOCS)
    entry = export.entry_dir(rr.info, int8_model_variant())
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["sha256"] and manifest["variant"] == int8_model_variant()

    calls: list[str] = []
    real = export._export_fp32
    monkeypatch.setattr(export, "_export_fp32", lambda info, out, **kw: (calls.append("export"), real(info, out, **kw)))
    clear_engines()
    assert Reranker(tiny_model, backend="onnx", quantize="int8").score("python", DOCS) == first
    assert calls == [], "a cached export must be reused"

    # Corrupt the cached model: detected by checksum, rebuilt, same scores.
    model = entry / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    clear_engines()
    assert Reranker(tiny_model, backend="onnx", quantize="int8").score("python", DOCS) == pytest.approx(first)
    assert calls == ["export"]
    assert export.check_entry(entry) is not None


def test_auto_backend_on_cpu(tiny_model: Path) -> None:
    from crossrank.backends import openvino_backend as ovb

    rr = Reranker(tiny_model)
    rr.warmup()
    fast_units = ovb.cpu_has_bf16() or (ovb.cpu_has_int8_dot() and ovb.nncf_installed())
    expected = f"openvino-{ovb.openvino_variant('auto')}" if ovb.openvino_installed() and fast_units else "onnx-int8"
    assert rr.backend_name == expected


def test_openvino_fp32_matches_torch_tiny(tiny_model: Path) -> None:
    pytest.importorskip("openvino")
    torch_scores = Reranker(tiny_model, backend="torch").score("python snake", DOCS)
    rr = Reranker(tiny_model, backend="openvino", quantize="fp32")
    assert rr.score("python snake", DOCS) == pytest.approx(torch_scores, abs=1e-4)
    assert rr.backend_name == "openvino-fp32"
    with pytest.raises(ValueError, match="quantize='bf16' is not available on backend='onnx'.*'openvino'"):
        Reranker(tiny_model, backend="onnx", quantize="bf16")  # refused at construction, before any load


def test_openvino_int8_cached_and_rebuilt(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nncf")
    from crossrank.backends import ov_quantize
    from crossrank.backends.openvino_backend import int8_model_variant as ov_int8_variant

    clear_engines()
    ref = np.array(Reranker(tiny_model, backend="openvino", quantize="fp32").score("python snake", DOCS))
    rr = Reranker(tiny_model, backend="openvino", quantize="int8")
    first = rr.score("python snake", DOCS)
    assert rr.backend_name == "openvino-int8"
    assert np.corrcoef(ref, first)[0, 1] > 0.9  # int8 of a random tiny model: close, not equal
    entry = export.entry_dir(rr.info, ov_int8_variant())
    assert set(json.loads((entry / "manifest.json").read_text())["files"]) == {"model.xml", "model.bin"}

    calls: list[str] = []
    real = ov_quantize.quantize_openvino_int8
    monkeypatch.setattr(ov_quantize, "quantize_openvino_int8", lambda *a, **kw: (calls.append("q"), real(*a, **kw)))
    clear_engines()
    assert Reranker(tiny_model, backend="openvino", quantize="int8").score("python snake", DOCS) == first
    assert calls == [], "a cached int8 model must be reused"

    weights = entry / "model.bin"  # corrupt the weights, not the graph: still detected by checksum
    weights.write_bytes(b"\0" * weights.stat().st_size)
    clear_engines()
    assert Reranker(tiny_model, backend="openvino", quantize="int8").score("python snake", DOCS) == pytest.approx(
        first, abs=1e-5
    )
    assert calls == ["q"]


@pytest.mark.integration
def test_shared_model_parity(shared_model: Path, scifact: BeirDataset) -> None:
    queries = scifact.test_queries(5)
    ids = list(scifact.corpus)[:60]
    docs = [Candidate(scifact.doc_text(d), id=d) for d in ids]
    ref = Reranker(shared_model, backend="torch")
    fp32 = Reranker(shared_model, backend="onnx", quantize="fp32")
    int8 = Reranker(shared_model, backend="onnx", quantize="int8")
    auto = Reranker(shared_model)  # the default path on this machine
    overlaps, auto_overlaps = [], []
    fast = {"openvino-bf16": 0.9, "openvino-int8": 0.8}
    for _, q in queries:
        a = np.array(ref.score(q, docs))
        assert np.abs(np.array(fp32.score(q, docs)) - a).max() < 1e-4
        b = np.array(int8.score(q, docs))
        overlaps.append(len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10)
        assert np.corrcoef(a, b)[0, 1] > 0.95
        c = np.array(auto.score(q, docs))
        auto_overlaps.append(len(set(np.argsort(-a)[:10]) & set(np.argsort(-c)[:10])) / 10)
    assert np.mean(overlaps) >= 0.7
    if auto.backend_name in fast:  # 5 queries only; the 50-300 query fidelity is in the benchmark
        assert np.mean(auto_overlaps) >= fast[auto.backend_name]
