"""Late interaction: the scorer against MaxSim written out by hand, the three folder formats against
the ColBERT / PyLate encoding recipe computed directly with transformers, and the storage precisions."""

from __future__ import annotations

import asyncio
import json
import shutil
import string
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from crossrank import Cascade, Reranker
from crossrank.late import (
    LateInteractionScorer,
    LateModelMismatchError,
    LateVectorStore,
    load_multi_vector_model,
    maxsim,
    pack,
)
from crossrank.scoring.base import Scorer, ScoreSettings

QUERY = "does aspirin lower the risk of heart disease?"
DOCS = [
    "aspirin lowers the risk of heart disease in patients, a trial found.",
    "coffee and tea are drunk with sugar.",
    "the python program reads code; it is a language.",
    "vitamin dose and blood sugar: insulin study of cells.",
    "red fire, blue water, green tea.",
    "heart",
    "what does the brain do in sleep? a study of the effect of sleep on brain cells and blood.",
]


def direct_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    """MaxSim as the ColBERT paper defines it: for each query vector, its best dot product with any
    document vector; summed. A plain loop, independent of the vectorised code."""
    total = 0.0
    for qv in q.astype(np.float64):
        total += max(float(np.dot(qv, dv)) for dv in d.astype(np.float64))
    return total


# ---------------------------------------------------------------------------------------------- MaxSim
def test_scorer_equals_direct_maxsim_on_the_models_own_vectors(late_folders: dict[str, Path]) -> None:
    scorer = LateInteractionScorer(late_folders["st"], precision="fp32")
    assert isinstance(scorer, Scorer)
    got = scorer.score(QUERY, DOCS, ScoreSettings())
    enc = scorer.model.encoder
    q = enc.encode_query(QUERY, convert_to_numpy=True)
    docs = enc.encode_document(DOCS, convert_to_numpy=True)
    want = [direct_maxsim(q, d) for d in docs]
    np.testing.assert_allclose(got.raw, want, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(want, 4))) == len(DOCS), "the tiny model must tell the documents apart"
    assert got.details["encoded"] == len(DOCS)
    # sentence-transformers' own MaxSim agrees too
    np.testing.assert_allclose(got.raw, enc.similarity([q], docs)[0].numpy(), rtol=1e-5, atol=1e-5)


def test_maxsim_padded_and_ragged_forms_agree_and_chunking_does_not_matter() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 12)).astype(np.float32)
    docs = [rng.normal(size=(n, 12)).astype(np.float32) for n in (1, 5, 30, 2, 17, 0)]
    want = [direct_maxsim(q, d) if len(d) else 0.0 for d in docs]
    np.testing.assert_allclose(maxsim(q, docs), want, rtol=1e-5)
    np.testing.assert_allclose(maxsim(q, docs, chunk_tokens=1), want, rtol=1e-5)  # one document per product
    padded = np.zeros((len(docs), 30, 12), dtype=np.float32)
    mask = np.zeros((len(docs), 30), dtype=bool)
    for i, d in enumerate(docs):
        padded[i, : len(d)] = d
        mask[i, : len(d)] = True
    np.testing.assert_allclose(maxsim(q, padded, mask), want, rtol=1e-5)
    np.testing.assert_allclose(maxsim(q, docs, mean=True), np.asarray(want) / 7, rtol=1e-5)


def test_fp16_and_int8_agree_with_fp32(late_folders: dict[str, Path]) -> None:
    settings = ScoreSettings()
    full = LateInteractionScorer(late_folders["st"], precision="fp32").score(QUERY, DOCS, settings).raw
    half = LateInteractionScorer(late_folders["st"], precision="fp16").score(QUERY, DOCS, settings).raw
    int8 = LateInteractionScorer(late_folders["st"], precision="int8").score(QUERY, DOCS, settings).raw
    n_q = 16  # the tiny model's query length bounds the sum
    assert np.max(np.abs(half - full)) < 2e-3 * n_q
    assert np.max(np.abs(int8 - full)) < 1e-2 * n_q
    assert list(np.argsort(-half)) == list(np.argsort(-full))
    assert list(np.argsort(-int8))[:3] == list(np.argsort(-full))[:3]
    # the forms' sizes: fp16 half of fp32, int8 a quarter plus one scale per token
    v = LateInteractionScorer(late_folders["st"]).model.encode_documents(DOCS[:1])[0]
    assert pack(v, "fp16").nbytes * 2 == pack(v, "fp32").nbytes
    assert pack(v, "int8").nbytes == v.shape[0] * (v.shape[1] + 4)


def test_identity_names_the_declared_similarity_before_the_model_loads(
    late_folders: dict[str, Path], tmp_path: Path
) -> None:
    """A folder saved with meanmaxsim: the score cache's key (identity) must not change when the weights load."""
    folder = Path(shutil.copytree(late_folders["st"], tmp_path / "mean"))
    config = folder / "config_sentence_transformers.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "similarity_fn_name": "meanmaxsim"}))
    scorer = LateInteractionScorer(folder, precision="fp32")
    before = scorer.identity
    got = scorer.score(QUERY, DOCS, ScoreSettings()).raw
    assert scorer.model.encoder.similarity_fn_name == "meanmaxsim"  # what sentence-transformers loaded
    assert before.endswith(":meanmaxsim") and scorer.identity == before
    plain = LateInteractionScorer(late_folders["st"], precision="fp32").score(QUERY, DOCS, ScoreSettings()).raw
    np.testing.assert_allclose(got, plain / scorer.encode_query(QUERY).shape[0], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- formats
def _reference_vectors(folder: Path, text: str, *, query: bool, settings: dict[str, object]) -> np.ndarray:
    """Token vectors computed the way PyLate / Stanford ColBERT compute them, with transformers directly.

    ColBERT (colbert/modeling/tokenization) and PyLate (models/colbert.py): the marker token goes
    right after [CLS]; the text is cut so that the whole input fits the length; a query is padded
    to its length with [MASK] tokens (attended only with attend_to_expansion / attend_to_mask_tokens),
    and every query position is scored; a document drops punctuation (the skiplist); vectors are
    the BERT token states times the projection, L2-normalized.
    """
    from safetensors.torch import load_file
    from transformers import BertModel, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder).eval()
    weights = load_file(str(folder / "1_Dense" / "model.safetensors")) if (folder / "1_Dense").is_dir() else None
    linear = (weights or load_file(str(folder / "model.safetensors")))["linear.weight"]
    length = int(settings["query_length" if query else "document_length"])  # type: ignore[call-overload]
    marker = tok.convert_tokens_to_ids("[unused0]" if query else "[unused1]")
    ids = tok(text, truncation=True, max_length=length - 1)["input_ids"]
    ids = [*ids[:1], marker, *ids[1:]]
    attention = [1] * len(ids)
    if query and settings["expand"]:
        pad = length - len(ids)
        ids += [tok.mask_token_id] * pad
        attention += [1 if settings["attend"] else 0] * pad
    with torch.no_grad():
        h = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
        v = torch.nn.functional.normalize(h @ linear.T, dim=-1).numpy()
    if not query:
        skip = {tok.convert_tokens_to_ids(p) for p in string.punctuation}
        v = v[[i not in skip for i in ids]]
    return v


@pytest.mark.parametrize("fmt", ["pylate", "stanford"])
def test_pylate_and_stanford_folders_score_as_their_recipe_says(late_folders: dict[str, Path], fmt: str) -> None:
    folder = late_folders[fmt]
    model = load_multi_vector_model(folder)
    assert (model.dim, model.query_length, model.document_length) == (16, 16, 48)
    settings = {"query_length": 16, "document_length": 48, "expand": True, "attend": False}
    q = _reference_vectors(folder, QUERY, query=True, settings=settings)
    assert q.shape[0] == 16  # expanded with [MASK] to the query length
    want = [direct_maxsim(q, _reference_vectors(folder, d, query=False, settings=settings)) for d in DOCS]
    got = LateInteractionScorer(folder, precision="fp32").score(QUERY, DOCS, ScoreSettings()).raw
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_long_document_is_cut_at_the_document_length_and_reported(late_folders: dict[str, Path]) -> None:
    long = " ".join(["aspirin heart risk"] * 40)
    rr = Reranker(LateInteractionScorer(late_folders["st"]))
    res = rr.rerank(QUERY, [long, "tea"])
    by_text = {r.text: r for r in res}
    assert by_text[long].truncated and not by_text["tea"].truncated
    assert res.stats.truncated == 1
    vecs = rr.scorer.model.encode_documents([long])[0]  # type: ignore[attr-defined]
    assert vecs.shape[0] == 48


# ---------------------------------------------------------------------------------------------- sources of vectors
def test_stored_cached_and_encoded_vectors_score_the_same(late_folders: dict[str, Path], tmp_path: Path) -> None:
    fresh = LateInteractionScorer(late_folders["st"])
    first = fresh.score(QUERY, DOCS, ScoreSettings())
    assert first.details["encoded"] == len(DOCS)
    again = fresh.score(QUERY, DOCS, ScoreSettings())
    assert again.details["cached"] == len(DOCS) and again.details["encoded"] == 0
    np.testing.assert_array_equal(first.raw, again.raw)

    store = LateVectorStore(tmp_path / "store")
    model = fresh.model
    store.bind(model.record.to_dict(), precision="fp16")
    vecs = [pack(v, "fp16") for v in model.encode_documents(DOCS[:4])]
    store.put([f"id{i}" for i in range(4)], DOCS[:4], vecs)
    stored = LateInteractionScorer(late_folders["st"], store=store).score(QUERY, DOCS, ScoreSettings())
    assert (stored.details["stored"], stored.details["encoded"]) == (4, 3)
    np.testing.assert_array_equal(stored.raw, first.raw)


def test_a_store_of_another_model_is_refused_with_the_fix(late_folders: dict[str, Path], tmp_path: Path) -> None:
    store = LateVectorStore(tmp_path / "store")
    store.bind(load_multi_vector_model(late_folders["pylate"]).record.to_dict())
    with pytest.raises(LateModelMismatchError, match="--rebuild"):
        LateInteractionScorer(late_folders["st"], store=store)


# ---------------------------------------------------------------------------------------------- as a stage
def test_cascade_with_a_late_stage_then_a_cross_encoder(late_folders: dict[str, Path], tiny_model: Path) -> None:
    late = LateInteractionScorer(late_folders["st"])
    ce = Reranker(tiny_model, backend="torch")
    cascade = Cascade([(late, 5), (ce, 3)])
    res = cascade.rerank(QUERY, DOCS, top_n=4)
    late_order = [DOCS[:5][i] for i in np.argsort(-late.score(QUERY, DOCS[:5], ScoreSettings()).raw, kind="stable")]
    ce_top = ce.rerank(QUERY, late_order[:3])
    assert [r.text for r in res][:3] == [r.text for r in ce_top]
    assert [r.text for r in res][3] == late_order[3]
    assert [s.name for s in res[0].stages] == ["late-interaction", "cross-encoder"]
    assert {f.index for f in res.filtered if f.reason == "top_n"} >= {5, 6}  # past the late stage's depth
    assert all(isinstance(r.score, float) for r in res)


def test_concurrent_and_async_calls_agree(late_folders: dict[str, Path]) -> None:
    scorer = LateInteractionScorer(late_folders["st"], cache_mb=0)
    want = scorer.score(QUERY, DOCS, ScoreSettings()).raw
    out: list[np.ndarray] = []

    def work() -> None:
        for _ in range(3):
            out.append(scorer.score(QUERY, DOCS, ScoreSettings()).raw)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 12
    for raw in out:
        np.testing.assert_array_equal(raw, want)
    got = asyncio.run(scorer.ascore(QUERY, DOCS, ScoreSettings())).raw
    np.testing.assert_array_equal(got, want)
