"""The torch backend's call pipeline (the GPU path), run on the CPU: same code, same scores.

What a GPU gains from it (one host→device copy per batch, one device→host copy per call, length
buckets, compiled shapes that repeat) is measured by ``benchmarks/gpu_check.py``; here the same
code runs on the CPU, where the copies are no-ops, and must give sentence-transformers' scores
(the reference) with buckets on or off and when traced by ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.backends.torch_pipeline import (
    BUCKETS_ENV,
    COMPILE_ENV,
    DEFAULT_BUCKETS,
    bucket_rows,
    bucket_width,
    settings_for,
)
from crossrank.errors import InvalidArgumentError
from crossrank.scoring.engine import clear_engines
from crossrank.scoring.pairs import pad_batch
from crossrank.testing import make_tiny_model

QUERY = "does aspirin lower the risk of heart disease"
# Lengths from 1 to ~130 tokens: batches of mixed widths, several buckets, a last batch of 1.
DOCS = ["aspirin heart risk " * k for k in (1, 2, 3, 5, 8, 13, 21, 34, 43)] + ["", "coffee and sleep"]
FAMILIES = ("bert", "roberta", "deberta-v2", "modernbert", "distilbert")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    return {f: make_tiny_model(root / f, f, max_length=160, seed=i) for i, f in enumerate(FAMILIES)}


@pytest.fixture(scope="module")
def reference(models: dict[str, Path]) -> dict[str, np.ndarray]:
    """sentence-transformers' raw scores (fp32, CPU) per family."""
    import torch
    from sentence_transformers import CrossEncoder

    out = {}
    for family, path in models.items():
        ce = CrossEncoder(str(path), local_files_only=True, activation_fn=torch.nn.Identity())
        out[family] = np.asarray(ce.predict([(QUERY, d) for d in DOCS], batch_size=4), dtype=np.float64)
    return out


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Engines are shared per model: settings read at load need a fresh one, and none left behind."""
    clear_engines()
    yield monkeypatch
    clear_engines()


def _rr(path: Path, **kw: Any) -> Reranker:
    return Reranker(path, backend="torch", quantize="fp32", batch_size=4, **kw)


def test_settings_from_the_environment() -> None:
    assert settings_for("cpu", {}).buckets == ()  # CPU: padding costs real arithmetic
    assert settings_for("cuda:0", {}).buckets == DEFAULT_BUCKETS
    assert settings_for("cpu", {BUCKETS_ENV: "on"}).buckets == DEFAULT_BUCKETS
    assert settings_for("cuda", {BUCKETS_ENV: "off"}).buckets == ()
    assert settings_for("cpu", {BUCKETS_ENV: "256, 64,128"}).buckets == (64, 128, 256)
    assert settings_for("cpu", {COMPILE_ENV: "reduce-overhead"}).compile_mode == "reduce-overhead"
    for bad in ({BUCKETS_ENV: "64,big"}, {BUCKETS_ENV: "0"}, {COMPILE_ENV: "fast"}):
        with pytest.raises(InvalidArgumentError, match="CROSSRANK_TORCH_"):
            settings_for("cpu", bad)


def test_bucket_shapes() -> None:
    assert [bucket_width(w, DEFAULT_BUCKETS, None) for w in (1, 16, 17, 100, 256, 257, 513, 700)] == [
        16,
        16,
        32,
        128,
        256,
        320,
        640,
        768,
    ]
    assert bucket_width(300, DEFAULT_BUCKETS, 258) == 300  # never below the batch, never past the positions
    assert bucket_width(200, DEFAULT_BUCKETS, 210) == 210
    assert bucket_width(37, (), 512) == 37
    assert [bucket_rows(r) for r in (1, 2, 3, 5, 32, 33)] == [1, 2, 4, 8, 32, 64]


def test_padding_to_a_bucket_adds_masked_columns_and_rows() -> None:
    batch = pad_batch([[5, 6, 7], [5]], [[0, 0, 1], [0]], pad_id=9, width=8, rows=4)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][0].tolist() == [5, 6, 7, 9, 9, 9, 9, 9]
    assert batch["attention_mask"][:2].sum(axis=1).tolist() == [3, 1]
    # Padding rows keep one unmasked position: an all-masked row can give NaN in some attention kernels.
    assert batch["attention_mask"][2:].tolist() == [[1, 0, 0, 0, 0, 0, 0, 0]] * 2
    left = pad_batch([[5, 6]], [[0, 0]], pad_id=9, left=True, width=4, rows=2)
    assert left["input_ids"][0].tolist() == [9, 9, 5, 6] and left["attention_mask"][1].tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("buckets", ["off", "on", "48,96,160"])
def test_scores_equal_sentence_transformers_with_or_without_buckets(
    buckets: str, models: dict[str, Path], reference: dict[str, np.ndarray], fresh: pytest.MonkeyPatch
) -> None:
    fresh.setenv(BUCKETS_ENV, buckets)
    for family, path in models.items():
        rr = _rr(path)
        got = np.asarray(rr.score(QUERY, DOCS))
        assert got == pytest.approx(reference[family], abs=1e-4), family
        runner = rr.engine.backend.runner  # type: ignore[attr-defined]
        assert runner.settings.buckets == settings_for("cpu", {BUCKETS_ENV: buckets}).buckets
        clear_engines()


def test_one_copy_in_per_batch_one_copy_out_per_call(models: dict[str, Path], fresh: pytest.MonkeyPatch) -> None:
    fresh.setenv(BUCKETS_ENV, "on")
    rr = _rr(models["bert"])
    runner = rr.engine.backend.runner  # type: ignore[attr-defined]
    before = (runner.host_to_device, runner.device_to_host)
    res = rr.rerank(QUERY, DOCS)
    batches = -(-len(DOCS) // 4)
    assert (runner.host_to_device - before[0], runner.device_to_host - before[1]) == (batches, 1)
    assert res.stats.pairs_scored == len(DOCS)


def test_the_next_batch_is_padded_after_the_current_one_is_launched(
    models: dict[str, Path], fresh: pytest.MonkeyPatch
) -> None:
    rr = _rr(models["bert"])
    engine = rr.engine
    runner = engine.backend.runner  # type: ignore[attr-defined]
    events: list[str] = []
    pad, call = engine._pad, runner._call

    def padding(*args: Any) -> Any:
        events.append("pad")
        return pad(*args)

    def launch(**inputs: Any) -> Any:
        events.append("forward")
        return call(**inputs)

    fresh.setattr(engine, "_pad", padding)
    fresh.setattr(runner, "_call", launch)
    rr.score(QUERY, DOCS)
    batches = -(-len(DOCS) // 4)
    assert events == ["pad", "forward"] * batches  # lazily: never all batches built before the first runs


def test_out_of_memory_in_a_call_retries_batch_by_batch(models: dict[str, Path], fresh: pytest.MonkeyPatch) -> None:
    rr = _rr(models["bert"])
    expected = rr.score(QUERY, DOCS)
    backend = rr.engine.backend

    def out_of_memory(batches: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fresh.setattr(backend, "forward_batches", out_of_memory)
    res = rr.rerank(QUERY, DOCS)
    assert res.stats.batch_retries == 1
    assert [r.raw_score for r in sorted(res, key=lambda r: r.index)] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_compiled_with_padded_rows_scores_the_same(
    models: dict[str, Path], reference: dict[str, np.ndarray], fresh: pytest.MonkeyPatch
) -> None:
    # "eager" traces the model with torch.compile's frontend (graph capture, guards per shape) without
    # generating kernels: the code path of the compiled modes, at test speed.
    fresh.setenv(COMPILE_ENV, "eager")
    fresh.setenv(BUCKETS_ENV, "on")
    rr = _rr(models["bert"])
    runner = rr.engine.backend.runner  # type: ignore[attr-defined]
    assert runner.padded_shape(3, 40) == (4, 64)
    for _ in range(2):  # the second call reuses the graphs of the first one's shapes
        assert np.asarray(rr.score(QUERY, DOCS)) == pytest.approx(reference["bert"], abs=1e-4)
