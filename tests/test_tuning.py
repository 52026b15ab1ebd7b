"""``backend="auto"`` by measurement (crossrank.scoring.tuning) and the ISA limit crossrank follows.

The decision logic (fastest path that ranks like fp32) is checked with scripted timings and scores;
the whole path — exports, timing, the cached decision, ``crossrank tune`` — with a real tiny model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank import Reranker, cpuinfo
from crossrank.errors import ExportError, InvalidArgumentError
from crossrank.model_files import inspect_model
from crossrank.scoring import tuning
from crossrank.scoring.engine import clear_engines


@pytest.fixture
def tuning_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Tuning enabled, with its own cache folder (exports and decisions) so every test starts cold."""
    monkeypatch.setenv("CROSSRANK_TUNE", "1")
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(tmp_path / "cache"))
    clear_engines()
    yield tmp_path / "cache"
    clear_engines()


# ---------------------------------------------------------------- the ISA limit


def test_isa_limit_cuts_flags_and_follows_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    amx = frozenset({"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
    assert cpuinfo.limit_flags(amx, "AVX2") == {"sse4_2", "avx", "avx2", "fma"}
    assert cpuinfo.limit_flags(amx, "avx512_core_vnni") == amx - {"avx512_bf16", "amx_int8", "amx_bf16"}
    assert cpuinfo.limit_flags(amx, "AVX512_CORE_AMX") == amx
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda: amx)
    monkeypatch.delenv("CROSSRANK_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # the oneDNN limit alone is enough
    from crossrank.backends import openvino_backend as ovb

    assert not ovb.cpu_has_bf16() and ovb.cpu_has_int8_dot()
    assert cpuinfo.isa_class() == "AVX-512 VNNI" and "emulated: ONEDNN_MAX_CPU_ISA" in cpuinfo.describe()
    monkeypatch.setenv("CROSSRANK_MAX_CPU_ISA", "avx2")  # crossrank's own switch wins
    assert not ovb.cpu_has_int8_dot() and ovb.int8_model_variant() == "ov-int8-7bit"
    assert ovb.openvino_variant("auto") == "fp32" and cpuinfo.isa_class() == "AVX2"
    monkeypatch.setenv("CROSSRANK_MAX_CPU_ISA", "AVX3")
    with pytest.raises(InvalidArgumentError, match="AVX3.*AVX512_CORE_VNNI"):
        cpuinfo.effective_flags()


def test_emulation_env_limits_every_runtime_it_can() -> None:
    env = cpuinfo.emulation_env("avx2")
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "MKL_ENABLE_INSTRUCTIONS" not in cpuinfo.emulation_env("AVX512_CORE_VNNI")
    with pytest.raises(InvalidArgumentError):
        cpuinfo.emulation_env("pentium")


def test_decision_key_depends_on_cpu_limit_model_and_request(tiny_model: Path, tiny_model_2: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    info, other = inspect_model(tiny_model), inspect_model(tiny_model_2)
    base = tuning.decision_key(info, "auto", None)
    assert base == tuning.decision_key(info, "auto", None)
    assert base != tuning.decision_key(other, "auto", None)
    assert base != tuning.decision_key(info, "int8", None)
    assert base != tuning.decision_key(info, "auto", 1)
    monkeypatch.setenv("CROSSRANK_MAX_CPU_ISA", "AVX2")
    if cpuinfo.cpu_flags() - cpuinfo.effective_flags():  # a CPU wider than AVX2
        assert base != tuning.decision_key(info, "auto", None)


# ---------------------------------------------------------------- the decision rule, scripted


class _Path:
    def __init__(self, name: str, batch: int) -> None:
        self.name = name
        self.preferred_batch_size = batch


def _scripted(tiny_model: Path, speeds: dict[str, float], scramble: set[str], fail: set[str]):  # type: ignore[no-untyped-def]
    info = inspect_model(tiny_model)
    ref = np.linspace(1.0, -1.0, 8)
    work = tuning.Workload(ids=[[1]] * 16, types=[[0]] * 16, bounds=[(0, 8), (8, 16)], tokens=8)

    def build(kind: str, q: str, threads: int) -> Any:
        if f"{kind}-{q}" in fail:
            raise ExportError(f"{kind} {q} cannot export this")
        return _Path(f"{kind}-{q}", 8)

    def score(be: Any, w: tuning.Workload, bs: int) -> np.ndarray:
        # Bigger batches are a little faster for every path; the path's own speed dominates.
        time.sleep(speeds[be.name] * (1.0 - 0.02 * bs / 8))
        s = np.concatenate([ref, ref])
        return s[::-1].copy() if be.name in scramble else s

    return info, build, score, work


def test_fastest_path_that_ranks_like_fp32_wins(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tuning, "candidates", lambda q: [("openvino", "int8"), ("openvino", "fp32"), ("onnx", "int8"), ("onnx", "fp32")]
    )
    speeds = {"openvino-int8": 0.002, "onnx-int8": 0.004, "openvino-fp32": 0.012, "onnx-fp32": 0.010}
    info, build, score, work = _scripted(tiny_model, speeds, scramble={"openvino-int8"}, fail=set())
    d = tuning.tune(info, build, score, work, progress=False)
    assert (d.backend, d.quantize) == ("onnx", "int8")  # the faster int8 path reorders: rejected
    rejected = [t for t in d.trials if t.name == "openvino-int8"]
    assert rejected and all(t.agreement is not None and t.agreement < tuning.MIN_AGREEMENT for t in rejected)
    assert "ranks unlike fp32" in (rejected[0].error or "")
    assert d.reference in ("openvino-fp32", "onnx-fp32")
    assert d.batch_size == 64 or d.batch_size in tuning.BATCH_SIZES  # batch sizes were explored
    assert {t.batch_size for t in d.trials if t.name == "onnx-int8"} >= {8, 16}
    table = d.table()
    assert "**chosen**" in table and "ranks unlike fp32" in table and "CPU:" in table
    assert tuning.Decision.from_json(json.loads(json.dumps(d.to_json()))) == d


def test_a_path_that_does_not_build_is_listed_and_skipped(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "candidates", lambda q: [("openvino", "int8"), ("onnx", "int8"), ("onnx", "fp32")])
    speeds = {"onnx-int8": 0.003, "onnx-fp32": 0.008}
    info, build, score, work = _scripted(tiny_model, speeds, scramble=set(), fail={"openvino-int8"})
    d = tuning.tune(info, build, score, work, progress=False)
    assert (d.backend, d.quantize) == ("onnx", "int8")
    assert any(t.name == "" and "does not build" in (t.error or "") for t in d.trials)
    info, build, score, work = _scripted(
        tiny_model, speeds, scramble=set(), fail={"openvino-int8", "onnx-int8", "onnx-fp32"}
    )
    with pytest.raises(ExportError):
        tuning.tune(info, build, score, work, progress=False)


# ---------------------------------------------------------------- end to end with a real tiny model


@pytest.mark.slow
def test_auto_measures_once_then_reads_the_decision(tiny_model: Path, tuning_on: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    docs = ["a cat sat on the mat", "stock markets fell sharply", "cats purr when content"]
    rr = Reranker(tiny_model)
    scores = rr.score("cats", docs)
    decision = tuning.cached_decision(rr.info, "auto", None)
    assert decision is not None, "auto did not save a decision"
    assert rr.backend_name == f"{decision.backend}-{decision.quantize}"
    assert rr.local.batch_size == decision.batch_size
    measured = {t.name for t in decision.trials if t.ms is not None}
    assert {"onnx-int8", "onnx-fp32"} <= measured
    assert decision.reference is not None and decision.reference.endswith("fp32")
    assert (tuning_on / "tuning" / f"{decision.key}.json").exists()

    # A new process-state reads the decision: measuring again would fail this test.
    clear_engines()

    def no_tuning(*a: Any, **k: Any) -> Any:
        raise AssertionError("measured again despite a cached decision")

    monkeypatch.setattr(tuning, "tune", no_tuning)
    rr2 = Reranker(tiny_model)
    np.testing.assert_allclose(rr2.score("cats", docs), scores, rtol=1e-5, atol=1e-5)
    assert rr2.backend_name == rr.backend_name
    # An explicit backend bypasses tuning; tune=False uses the static rule without measuring.
    assert Reranker(tiny_model, backend="onnx", quantize="fp32").warmup().backend_name == "onnx-fp32"
    Reranker(tiny_model, tune=False).score("cats", docs)


def test_tune_off_measures_nothing(tiny_model: Path, tuning_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSRANK_TUNE", "0")
    rr = Reranker(tiny_model)
    rr.score("cats", ["a cat", "a dog"])
    assert not (tuning_on / "tuning").exists()
    with pytest.raises(InvalidArgumentError, match="tune must be"):
        Reranker(tiny_model, tune="yes")  # type: ignore[arg-type]


@pytest.mark.slow
def test_crossrank_tune_prints_and_saves(tiny_model: Path, tuning_on: Path) -> None:
    env = {**__import__("os").environ, "CROSSRANK_CACHE_DIR": str(tuning_on)}
    out = subprocess.run(
        [sys.executable, "-m", "crossrank", "tune", "--model", str(tiny_model), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["backend"] in ("onnx", "openvino") and d["trials"]
    assert (tuning_on / "tuning" / f"{d['key']}.json").exists()
    table = subprocess.run(
        [sys.executable, "-m", "crossrank", "tune", "--model", str(tiny_model), "--dry-run", "--quantize", "fp32"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert table.returncode == 0, table.stderr[-2000:]
    assert "| path |" in table.stdout and "not saved" in table.stdout and "int8" not in table.stdout.split("|---")[1]


def test_onnx_runtime_is_left_out_while_emulating_a_narrower_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT cannot follow an ISA limit: under emulation its timings would be the real CPU's."""
    from crossrank.backends import openvino_backend as ovb

    amx = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda: amx)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("CROSSRANK_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(ovb, "openvino_installed", lambda: True)
    monkeypatch.setattr(ovb, "nncf_installed", lambda: True)
    assert ("onnx", "int8") in tuning.candidates("auto")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert tuning.candidates("auto") == [("openvino", "int8"), ("openvino", "fp32")]
    monkeypatch.setattr(ovb, "openvino_installed", lambda: False)  # nothing else: ORT it is
    assert tuning.candidates("auto") == [("onnx", "int8"), ("onnx", "fp32")]
