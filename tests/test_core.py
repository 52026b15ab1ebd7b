"""Core behaviour on tiny random cross-encoders: ordering, options, copies, scales, heads."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from crossrank import Candidate, Ranked, Reranker
from crossrank.scoring.engine import loaded_engines

DOCS = [
    "the python snake is a reptile",
    "python code is a program language",
    "aspirin dose and heart risk",
    "coffee and sleep in patients",
    "vitamin study of blood sugar",
]


def test_score_returns_python_floats_in_input_order(tiny: Reranker) -> None:
    scores = tiny.score("what is python", DOCS)
    assert len(scores) == len(DOCS)
    assert all(type(s) is float for s in scores)
    # Input order: scoring a permutation permutes the scores.
    rev = tiny.score("what is python", DOCS[::-1])
    assert rev == pytest.approx(scores[::-1], abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) > 1, "tiny model should tell texts apart"


def test_rerank_sorted_best_first_with_ranks(tiny: Reranker) -> None:
    res = tiny.rerank("what is python", DOCS)
    scores = [r.score for r in res]
    assert scores == sorted(scores, reverse=True)
    assert [r.rank for r in res] == list(range(1, len(DOCS) + 1))
    assert sorted(r.index for r in res) == list(range(len(DOCS)))
    for r in res:
        assert isinstance(r, Ranked)
        assert r.text == DOCS[r.index]
        assert r.first_stage_rank == r.index + 1
        assert type(r.score) is float and type(r.raw_score) is float
    assert json.dumps(res.to_dict())  # plain builtins only


def test_matches_sentence_transformers_reference(tiny_model: Path, tiny: Reranker) -> None:
    from sentence_transformers import CrossEncoder

    ref = CrossEncoder(str(tiny_model)).predict([("what is python", d) for d in DOCS])
    assert tiny.score("what is python", DOCS) == pytest.approx([float(x) for x in ref], abs=1e-5)


def test_top_n_and_threshold(tiny: Reranker) -> None:
    full = tiny.rerank("heart risk", DOCS)
    cut = full[2].score
    res = tiny.rerank("heart risk", DOCS, threshold=cut)  # edge equal to a score is kept
    assert [r.index for r in res] == [r.index for r in full[:3]]
    assert {f.reason for f in res.filtered} == {"threshold"}
    both = tiny.rerank("heart risk", DOCS, threshold=cut, top_n=2)  # threshold first, then top_n
    assert [r.index for r in both] == [r.index for r in full[:2]]
    reasons = sorted(f.reason for f in both.filtered)
    assert reasons == ["threshold", "threshold", "top_n"]
    big = tiny.rerank("heart risk", DOCS, top_n=50)
    assert len(big) == len(DOCS) and not big.filtered
    # Nothing is lost: every input is either a result or reported as filtered.
    assert sorted([r.index for r in both] + [f.index for f in both.filtered]) == list(range(len(DOCS)))


def test_ties_keep_input_order(tiny: Reranker) -> None:
    docs = ["same text here", "other words", "same text here", "same   text here"]
    res = tiny.rerank("q", docs)
    same = [r.index for r in res if r.text.split() == ["same", "text", "here"]]
    assert same == [0, 2, 3]
    assert res.stats.duplicates == 2 and res.stats.pairs_scored == 2


def test_empty_candidates_do_not_load_model(tiny_model: Path) -> None:
    from crossrank.scoring.engine import clear_engines

    clear_engines()
    rr = Reranker(tiny_model, backend="torch")
    assert len(rr.rerank("q", [])) == 0
    assert rr.score("q", []) == []
    assert not rr.local.loaded and loaded_engines() == 0


def test_inputs_never_mutated(tiny: Reranker) -> None:
    meta = {"source": "a.txt", "nested": {"k": [1, 2]}}
    cands = [Candidate(text=d, id=f"d{i}", metadata=meta, score=0.5 - i / 10) for i, d in enumerate(DOCS)]
    dicts = [{"text": d, "id": i, "metadata": {"x": i}} for i, d in enumerate(DOCS)]
    before = copy.deepcopy((cands, dicts, meta))
    res = tiny.rerank("q", cands, top_n=3)
    tiny.rerank("q", dicts)
    assert (cands, dicts, meta) == before
    top = res[0]
    assert top.id == f"d{top.index}" and top.first_stage_score == pytest.approx(0.5 - top.index / 10)
    assert dict(top.metadata) == meta


def test_normalize_scales(tiny: Reranker) -> None:
    raw = np.array(tiny.score("python", DOCS))
    sig = np.array(tiny.score("python", DOCS, normalize="sigmoid"))
    assert np.allclose(sig, 1 / (1 + np.exp(-raw)), atol=1e-6)
    soft = np.array(tiny.score("python", DOCS, normalize="softmax"))
    assert soft.sum() == pytest.approx(1.0) and np.all(soft > 0)
    mm = np.array(tiny.score("python", DOCS, normalize="minmax"))
    assert mm.min() == 0.0 and mm.max() == 1.0
    # Same order on every scale.
    for s in (sig, soft, mm):
        assert list(np.argsort(-s, kind="stable")) == list(np.argsort(-raw, kind="stable"))
    assert tiny.score("python", ["one doc"], normalize="minmax") == [1.0]
    res = tiny.rerank("python", DOCS, normalize="sigmoid", threshold=0.5)
    assert all(r.score >= 0.5 for r in res) and res.normalize == "sigmoid"


def test_two_logit_head_takes_positive_class(tiny_model_2: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rr = Reranker(tiny_model_2, backend="torch")
    got = rr.score("python snake", DOCS)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_2))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_2)).eval()
    with torch.no_grad():
        logits = model(**tok(["python snake"] * len(DOCS), DOCS, padding=True, return_tensors="pt")).logits
    expect = (logits[:, 1] - logits[:, 0]).tolist()
    assert got == pytest.approx(expect, abs=1e-5)
    probs = rr.score("python snake", DOCS, normalize="sigmoid")
    assert probs == pytest.approx(torch.softmax(logits, -1)[:, 1].tolist(), abs=1e-5)


def test_declared_max_length_is_honoured(tmp_path: Path) -> None:
    from crossrank.testing import make_tiny_cross_encoder

    short = make_tiny_cross_encoder(tmp_path / "short", model_max_length=32, max_position_embeddings=64)
    assert Reranker(short, backend="torch").max_length == 32
    undeclared = make_tiny_cross_encoder(tmp_path / "none", model_max_length=None, max_position_embeddings=64)
    assert Reranker(undeclared, backend="torch").max_length == 64
    with pytest.warns(UserWarning, match="above the 32 tokens"):  # allowed, but past the trained length
        assert Reranker(short, backend="torch", max_length=48).max_length == 48


def test_long_document_truncated_and_reported(tiny: Reranker) -> None:
    long_doc = "aspirin heart risk " * 200
    res = tiny.rerank("aspirin", ["short doc", long_doc])
    by_index = {r.index: r for r in res}
    assert by_index[1].truncated and not by_index[0].truncated
    assert res.stats.truncated == 1
    # Never beyond the position limit: a pair is at most max_length tokens.
    enc = tiny.engine.encoder(tiny.max_length).encode("aspirin", [long_doc])
    assert max(len(x) for x in enc.ids) == tiny.max_length


def test_long_query_keeps_room_for_document(tiny: Reranker) -> None:
    query = "why does coffee affect sleep " * 60
    with pytest.warns(UserWarning, match="query has"):
        res = tiny.rerank(query, ["coffee and sleep", "red fire"])
    assert res.stats.query_truncated and len(res) == 2
    enc = tiny.engine.encoder(tiny.max_length)
    with pytest.warns(UserWarning):
        pairs = enc.encode(query, ["coffee and sleep " * 100])
    doc_tokens = sum(1 for t in pairs.types[0] if t == 1) - 1  # minus the final [SEP]
    assert doc_tokens >= tiny.max_length // 4 - 3


def test_nan_first_stage_score_is_missing(tiny: Reranker) -> None:
    res = tiny.rerank("q", [Candidate("a b", score=math.nan), {"text": "c d", "score": 1.0}])
    by_index = {r.index: r for r in res}
    assert by_index[0].first_stage_score is None and by_index[1].first_stage_score == 1.0


def test_shared_engine_registry(tiny_model: Path) -> None:
    a = Reranker(tiny_model, backend="torch")
    b = Reranker(tiny_model, backend="torch", normalize="sigmoid")
    a.score("q", ["x"])
    b.score("q", ["x"])
    assert a.engine is b.engine


def test_score_cache_hit_skips_the_model(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch", cache_size=100)
    first = rr.rerank("python snake", DOCS)
    engine = rr.engine
    real = engine.backend

    class MustNotRun:
        name = real.name

        def forward(self, batch: object) -> object:
            raise AssertionError("cache hit must not call the model")

    engine.backend = MustNotRun()  # type: ignore[assignment]
    try:
        again = rr.rerank("python snake", DOCS)
    finally:
        engine.backend = real
    assert again.scores == first.scores and again.indices == first.indices
    assert again.stats.cache_hits == len(DOCS) and again.stats.pairs_scored == 0
    info = rr.cache_info()
    assert info is not None and info.hits == len(DOCS) and info.misses == len(DOCS)
    # A different query or setting is a different key.
    other = rr.rerank("python snake", DOCS, long_documents="windows")
    assert other.stats.cache_hits == 0


def test_windows_cover_whole_document_and_max_aggregates(tiny: Reranker) -> None:
    enc = tiny.engine.encoder(tiny.max_length)
    doc = " ".join(f"w{i % 26}" for i in range(700))
    overlap = tiny.window_overlap
    pairs = enc.encode("heart risk", [doc], windows=True, window_overlap=overlap, max_windows=tiny.max_windows)
    doc_ids = enc.tokenizer.encode(doc, add_special_tokens=False).ids
    covered: set[int] = set()
    room = enc.budget - len(enc.encode_query("heart risk")[0])
    step = room - min(overlap, room // 2)
    for w in range(pairs.windows[0]):
        start = min(w * step, len(doc_ids) - room)
        covered.update(range(start, start + room))
    assert pairs.windows[0] > 1 and not pairs.truncated[0]
    assert covered >= set(range(len(doc_ids)))
    res = tiny.rerank("heart risk", [doc, "short"], long_documents="windows")
    long = next(r for r in res if r.index == 0)
    assert long.windows == pairs.windows[0] and not long.truncated
    per_window = tiny.engine.score_tokens(pairs.ids, pairs.types, batch_size=8)
    assert long.raw_score == pytest.approx(float(per_window.max()), abs=1e-5)


def test_rrf_fusion_orders_by_fused_score(tiny: Reranker) -> None:
    res = tiny.rerank("heart risk", DOCS, fusion="rrf")
    fused = [r.fused_score for r in res]
    assert all(f is not None for f in fused) and fused == sorted(fused, reverse=True)  # type: ignore[type-var]
    plain = tiny.rerank("heart risk", DOCS)
    rerank_rank = {r.index: r.rank for r in plain}
    for r in res:
        assert r.fused_score == pytest.approx(1 / (60 + r.index + 1) + 1 / (60 + rerank_rank[r.index]))


def test_model_options_with_a_ready_scorer_are_refused(tiny: Reranker) -> None:
    from crossrank import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="backend configure a local model"):
        Reranker(tiny.scorer, backend="onnx")
    with pytest.raises(InvalidArgumentError, match="remote_options"):
        Reranker("http://127.0.0.1:9", max_length=128)
    with pytest.raises(TypeError, match="max_lenght"):
        Reranker(tiny.local.info.path, max_lenght=128)  # type: ignore[call-arg]
    shared = Reranker(tiny.scorer, normalize="sigmoid")  # a second Reranker over the same loaded model
    assert shared.scorer is tiny.scorer and shared.score("q", ["a"])[0] == pytest.approx(
        1 / (1 + math.exp(-tiny.score("q", ["a"])[0]))
    )
