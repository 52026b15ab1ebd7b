"""Concurrency, async micro-batching, cancellation, memory-pressure retries, and bad input."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from crossrank import Candidate, CrossrankError, InvalidDocumentTypeError, Reranker

WORDS = [
    "python",
    "snake",
    "code",
    "aspirin",
    "heart",
    "risk",
    "coffee",
    "sleep",
    "vitamin",
    "blood",
    "sugar",
    "brain",
    "cell",
    "gene",
]


def make_docs(seed: int, n: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) for _ in range(n)]


def test_sixteen_threads_match_serial(tiny: Reranker) -> None:
    jobs = [(f"{WORDS[i % len(WORDS)]} question {i}", make_docs(i)) for i in range(16 * 50)]
    serial = [tiny.rerank(q, d).to_dict()["results"] for q, d in jobs]
    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(lambda j: tiny.rerank(j[0], j[1]).to_dict()["results"], jobs))
    assert threaded == serial


async def test_concurrent_async_is_microbatched_and_identical(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch", max_wait_ms=5)
    jobs = [(f"query {i} {WORDS[i % len(WORDS)]}", make_docs(100 + i)) for i in range(64)]
    serial = [rr.rerank(q, d) for q, d in jobs]
    batcher = rr.engine.batcher(max_wait_ms=rr.local.max_wait_ms, max_pairs=rr.local.max_batch_pairs)
    before = batcher.batches

    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    hb = asyncio.create_task(heartbeat())
    results = await asyncio.gather(*(rr.arerank(q, d) for q, d in jobs))
    stop.set()
    await hb
    assert [r.indices for r in results] == [s.indices for s in serial]
    for r, s in zip(results, serial):
        assert r.scores == pytest.approx(s.scores, abs=1e-5)
    forward_groups = batcher.batches - before
    assert forward_groups < len(jobs) / 2, f"64 queries should share forward passes, got {forward_groups} groups"
    assert max(gaps) < 0.5, f"event loop blocked for {max(gaps):.3f}s"


async def test_cancelling_one_query_leaves_others_intact(tiny: Reranker) -> None:
    jobs = [(f"q{i}", make_docs(200 + i, 30)) for i in range(8)]
    tasks = [asyncio.create_task(tiny.arerank(q, d)) for q, d in jobs]
    tasks[3].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    for i, res in enumerate(done):
        if i != 3:
            assert not isinstance(res, BaseException)
            assert res.indices == tiny.rerank(*jobs[i]).indices
    assert (await tiny.arerank("after", ["still works"])).scores


def test_out_of_memory_halves_the_batch(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch", batch_size=32)
    docs = make_docs(7, 40)
    expected = rr.score("heart", docs)
    engine = rr.engine
    real = engine.backend

    class Flaky:
        name = real.name
        calls: list[int] = []

        def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
            self.calls.append(len(batch["input_ids"]))
            if len(batch["input_ids"]) > 8:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real.forward(batch)

    engine.backend = Flaky()
    try:
        res = rr.rerank("heart", docs)
    finally:
        engine.backend = real
    assert res.stats.batch_retries == 2  # 32 -> 16 -> 8
    assert max(Flaky.calls[2:]) <= 8
    got = {r.index: r.raw_score for r in res}
    assert [got[i] for i in range(len(docs))] == pytest.approx(expected, abs=1e-5)


def test_other_backend_errors_propagate(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch")
    engine = rr.engine
    real = engine.backend

    class Broken:
        name = "broken"

        def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
            raise ValueError("shape mismatch")

    engine.backend = Broken()
    try:
        with pytest.raises(ValueError, match="shape mismatch"):
            rr.score("q", ["a"])
    finally:
        engine.backend = real


# ------------------------------------------------------------------------------- bad input table
UNICODE = [
    "مرحبا بالعالم، هذا نص عربي",  # RTL
    "🐍🐍 python 🐍 snake emoji",
    "蛇是爬行动物。Python 是编程语言。",  # CJK
    "e\u0301te\u0301 cafe\u0301 combining marks",
    "nul\x00byte and \x07 bell \x1b escape controls",
    "\u200b\u200d zero width \ufeff bom",
]


@pytest.mark.parametrize("text", UNICODE)
def test_unicode_documents_are_scored(tiny: Reranker, text: str) -> None:
    res = tiny.rerank(text, [text, "plain words", ""])
    assert len(res) == 3 and all(math.isfinite(r.score) for r in res)


def test_empty_and_whitespace_documents_are_scored_not_dropped(tiny: Reranker) -> None:
    res = tiny.rerank("q", ["", "   ", "real text"])
    assert sorted(r.index for r in res) == [0, 1, 2]
    assert res.stats.duplicates == 1  # "" and "   " normalise to the same text


def test_one_megabyte_document(tiny: Reranker) -> None:
    doc = ("aspirin heart risk " * 60_000)[:1_000_000]
    res = tiny.rerank("aspirin", ["short", doc])
    assert res.stats.truncated == 1
    win = tiny.rerank("aspirin", ["short", doc], long_documents="windows")
    big = next(r for r in win if r.index == 1)
    assert big.windows == tiny.max_windows and big.truncated  # capped, and says so


def test_ten_thousand_candidates(tiny: Reranker) -> None:
    docs = [f"doc {i} " + " ".join(WORDS[i % 7 : i % 7 + 5]) for i in range(10_000)]
    res = tiny.rerank("heart risk", docs, top_n=10)
    assert len(res) == 10 and len(res.filtered) == 9_990
    assert res.stats.candidates == 10_000


def test_duplicate_ids_are_kept(tiny: Reranker) -> None:
    res = tiny.rerank("q", [Candidate("a b", id="x"), Candidate("c d", id="x")])
    assert [r.id for r in res] == ["x", "x"] and len(res) == 2


def test_dedupe_keeps_first_and_reports_the_rest(tiny: Reranker) -> None:
    res = tiny.rerank("q", ["same", "other", "same ", "SAME"], dedupe=True)
    assert sorted(r.index for r in res) == [0, 1, 3]  # case differs: not a duplicate
    assert [(f.index, f.reason, f.duplicate_of) for f in res.filtered] == [(2, "duplicate", 0)]


def test_metadata_with_non_json_values_is_carried(tiny: Reranker) -> None:
    lock = threading.Lock()
    res = tiny.rerank("q", [Candidate("a", metadata={"lock": lock, "when": time})])
    assert res[0].metadata["lock"] is lock


def test_generator_input_and_mixed_types(tiny: Reranker) -> None:
    res = tiny.rerank("q", (d for d in ["a", Candidate("b"), {"text": "c", "id": 3}]))
    assert sorted(r.index for r in res) == [0, 1, 2]
    assert {r.id for r in res} == {None, "3"}
    with pytest.raises(InvalidDocumentTypeError, match="candidate 1"):
        tiny.rerank("q", ["a", {"body": "no text key"}])


def test_every_raised_error_is_a_crossrank_error(tiny: Reranker) -> None:
    bad_calls = [
        lambda: tiny.rerank("", ["a"]),
        lambda: tiny.rerank(None, ["a"]),  # type: ignore[arg-type]
        lambda: tiny.rerank("q", [None]),
        lambda: tiny.rerank("q", ["a"], top_n=0),
        lambda: tiny.rerank("q", ["a"], threshold=float("nan")),
        lambda: tiny.rerank("q", ["a"], normalize="zscore"),
        lambda: tiny.rerank("q", ["a"], fusion="borda"),
        lambda: tiny.rerank("q", ["a"], long_documents="chunks"),
    ]
    for call in bad_calls:
        with pytest.raises(CrossrankError):
            call()


def test_scores_are_json_safe_floats(tiny: Reranker) -> None:
    import json

    res = tiny.rerank("q", ["a", "b"], normalize="sigmoid")
    json.dumps(res.to_dict())
    assert all(type(s) is float for s in tiny.score("q", ["a", "b"]))


# ------------------------------------------------------------------------------- damaged models
def _copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_truncated_weights_give_a_clear_error(tiny_model: Path, tmp_path: Path, backend: str) -> None:
    from crossrank import ModelLoadError
    from crossrank.errors import ExportError

    bad = _copy_model(tiny_model, tmp_path / "truncated")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises((ModelLoadError, ExportError)) as info:
        Reranker(bad, backend=backend).warmup()
    assert "re-download" in str(info.value)


def test_corrupt_config_and_missing_tokenizer(tiny_model: Path, tmp_path: Path) -> None:
    from crossrank import ModelLoadError

    bad = _copy_model(tiny_model, tmp_path / "badcfg")
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Reranker(bad)
    notok = _copy_model(tiny_model, tmp_path / "notok")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (notok / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        Reranker(notok, backend="torch").warmup()


@pytest.mark.slow
def test_memory_flat_over_1000_reranks(tiny_model: Path) -> None:
    import resource

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    rr = Reranker(tiny_model, backend="onnx", quantize="fp32")
    jobs = [(f"q {i}", make_docs(i, 20)) for i in range(50)]
    for i in range(100):
        rr.rerank(*jobs[i % 50])
    start = rss_mb()
    for i in range(1000):
        rr.rerank(*jobs[i % 50])
    assert rss_mb() - start < 30, f"RSS grew from {start:.0f} MB to {rss_mb():.0f} MB"
