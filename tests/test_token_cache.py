"""The document token cache: pairs assembled from cached ids are the tokenizer's own pair encodings.

The reference is the family's Hugging Face tokenizer (``transformers.AutoTokenizer`` on the model
folder, what sentence-transformers feeds the model): ``tokenizer(q, d, truncation="only_second",
max_length=L)`` for truncation, ``truncation="longest_first"`` where the two rules coincide (a
query no longer than half the room), ``truncation_side="left"`` for left cuts, and
``return_overflowing_tokens=True, stride=s`` for sliding windows. crossrank's own query cap (a query
keeps at most 3/4 of the room) is checked against the tokenizer on the query text cut at that
token, with queries of whole-word tokens so the cut text tokenizes to the same ids.

Every family the tests build (BERT, ELECTRA, RoBERTa, XLM-R, DeBERTa-v2, ModernBERT, DistilBERT)
and the shared trained MiniLM (when present) are covered, each encoded twice: cold (documents
tokenized and cached) and warm (every document from the cache). A pair layout the template cannot
rebuild falls back to the tokenizer's post-processor, checked against sentence-transformers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED_MODEL
from tokenizers import Tokenizer, processors

from crossrank import Reranker
from crossrank.errors import InvalidArgumentError
from crossrank.scoring import token_cache as tc
from crossrank.scoring.engine import clear_engines
from crossrank.scoring.pairs import EncodedPairs, PairEncoder, load_tokenizer, pad_batch
from crossrank.scoring.token_cache import ENTRY_OVERHEAD, TokenCache, set_token_cache_mb, token_cache_for
from crossrank.testing import FAMILIES, make_tiny_model

L = 64  # max_length: short enough that the long texts get truncated and windowed

WORDS = ["the", "heart", "risk", "of", "aspirin", "and", "coffee", "in", "patients", "with", "blood", "sugar"]
QUERIES = [
    "does aspirin lower heart risk",
    "a",
    "Naïve CAFÉ? 日本語 🙂",
    "  spaced \t out\nquery  ",
    "[SEP] </s> <s> looks special",
]
DOCS = [
    "",
    " ",
    "\n\t \r\n",
    "a",
    "aspirin lowers the risk of a heart attack.",
    " ".join(WORDS * 12),  # long: truncated, several windows
    "naïve café — 日本語のテキスト 🙂 émigré Ωmega",
    "zero\u200bwidth and\u00a0nbsp, combining e\u0301 and ﬁ ligature",
    "MiXeD CaSe TeXt WITH UPPER words",
    "tabs\tand\nnewlines\r\nhere   and   runs   of   spaces",
    "[SEP] </s> <s> [CLS] <pad> text that looks like special tokens",
    "x" * 300,  # one long word: many sub-word tokens
    "coffee " * 80,
]
LONG_QUERY = " ".join(WORDS * 5)  # far past 3/4 of the room: crossrank cuts it


@dataclass
class Tok:
    name: str
    path: Path
    ours: Tokenizer
    hf: Any


def _tokenizers(root: Path) -> Iterator[tuple[str, Path]]:
    for family in FAMILIES:
        yield family, make_tiny_model(root / family, family, max_length=64)
    if SHARED_MODEL.exists():
        yield "minilm-scifact", SHARED_MODEL


@pytest.fixture(scope="module")
def toks(tmp_path_factory: pytest.TempPathFactory) -> list[Tok]:
    from transformers import AutoTokenizer

    out = []
    for name, path in _tokenizers(tmp_path_factory.mktemp("toks")):
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        out.append(Tok(name, path, load_tokenizer(path), hf))
    return out


def _hf(tok: Tok, q: str, d: str, **kw: Any) -> tuple[list[int], list[int]]:
    """The tokenizer's pair encoding, called with lists as sentence-transformers calls it.

    (A lone ``tokenizer(q, "")`` drops an empty second text and encodes a single sequence; a
    batch encodes the pair, as the model sees it in every reranker.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = tok.hf([q], [d], max_length=L, return_token_type_ids=True, **kw)
    return list(enc["input_ids"][0]), list(enc["token_type_ids"][0])


def _ours(enc: PairEncoder, q: str, docs: list[str], **kw: Any) -> EncodedPairs:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long query's warning
        return enc.encode(q, docs, **kw)


def _encoder(tok: Tok) -> PairEncoder:
    enc = PairEncoder(tok.ours, L, cache=TokenCache("test", 2**20))
    assert enc.assembles, f"{tok.name}: the template path must be taken for this family"
    return enc


def _twice(enc: PairEncoder, q: str, docs: list[str], **kw: Any) -> list[EncodedPairs]:
    """Cold (misses, then cached) and warm (all hits) encodings of the same call."""
    assert enc.cache is not None
    enc.cache.clear()
    cold = _ours(enc, q, docs, **kw)
    warm = _ours(enc, q, docs, **kw)
    assert cold.token_cache_misses == len(docs)  # the documents given are distinct
    assert warm.token_cache_hits == len(docs) and warm.token_cache_misses == 0
    return [cold, warm]


def test_truncation_equals_the_tokenizers_pair_encoding(toks: list[Tok]) -> None:
    for tok in toks:
        enc = _encoder(tok)
        for q in QUERIES:
            for got in _twice(enc, q, DOCS):
                assert not got.query_truncated  # these queries fit crossrank's query cap
                for i, d in enumerate(DOCS):
                    ref = _hf(tok, q, d, truncation="only_second")
                    assert (got.ids[i], got.types[i]) == ref, f"{tok.name}: {q!r} / {d[:40]!r}"
                    n_q = len(tok.ours.encode(q, add_special_tokens=False).ids)
                    n_doc = len(tok.ours.encode(d, add_special_tokens=False).ids)
                    assert got.truncated[i] == (n_doc > enc.budget - n_q) and got.doc_tokens[i] == n_doc
                    if n_q <= enc.budget // 2:  # longest_first cuts the document only: the same pairs
                        assert got.ids[i] == _hf(tok, q, d, truncation="longest_first")[0], tok.name


def test_left_truncation_equals_the_tokenizers(toks: list[Tok]) -> None:
    for tok in toks:
        enc = _encoder(tok)
        tok.hf.truncation_side = "left"
        try:
            for got in _twice(enc, QUERIES[0], DOCS, truncation_side="left"):
                for i, d in enumerate(DOCS):
                    assert (got.ids[i], got.types[i]) == _hf(tok, QUERIES[0], d, truncation="only_second"), tok.name
        finally:
            tok.hf.truncation_side = "right"


def test_long_query_is_capped_then_paired_like_the_tokenizer(toks: list[Tok]) -> None:
    for tok in toks:
        enc = _encoder(tok)
        q_enc = tok.ours.encode(LONG_QUERY, add_special_tokens=False)
        assert len(q_enc.ids) > enc.max_query_tokens
        # Every query token is a whole word here, so the text cut after the cap-th token tokenizes to those ids.
        cut = LONG_QUERY[: q_enc.offsets[enc.max_query_tokens - 1][1]]
        assert tok.ours.encode(cut, add_special_tokens=False).ids == q_enc.ids[: enc.max_query_tokens]
        for got in _twice(enc, LONG_QUERY, DOCS):
            assert got.query_truncated
            for i, d in enumerate(DOCS):
                assert (got.ids[i], got.types[i]) == _hf(tok, cut, d, truncation="only_second"), tok.name


def test_windows_equal_the_tokenizers_overflowing_windows(toks: list[Tok]) -> None:
    overlap = 6
    for tok in toks:
        enc = _encoder(tok)
        q = QUERIES[0]
        # Long in this tokenizer's tokens (WordPiece reads a 300-letter word as one [UNK]).
        long_docs = [d for d in DOCS if len(tok.ours.encode(d, add_special_tokens=False).ids) > L]
        assert len(long_docs) >= 2
        for got in _twice(enc, q, long_docs, windows=True, window_overlap=overlap, max_windows=50):
            for slot, d in enumerate(long_docs):
                rows = [i for i, o in enumerate(got.owner) if o == slot]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ref = tok.hf(
                        q,
                        d,
                        max_length=L,
                        truncation="only_second",
                        stride=overlap,
                        return_overflowing_tokens=True,
                        return_token_type_ids=True,
                    )
                assert got.windows[slot] == len(rows) > 1 and not got.truncated[slot]
                # Every window but the last is the tokenizer's; crossrank's last one ends at the document's end.
                # Ids only: the tokenizer's overflowing rows give XLM-R's document type 1 where its plain pair
                # encoding gives 0 (one-type models ignore them); type ids are checked by the truncation tests.
                for r, ref_ids in zip(rows[:-1], ref["input_ids"]):
                    assert got.ids[r] == list(ref_ids), tok.name
                doc_ids = tok.ours.encode(d, add_special_tokens=False).ids
                room = enc.budget - len(tok.ours.encode(q, add_special_tokens=False).ids)
                last_text = d[tok.ours.encode(d, add_special_tokens=False).offsets[len(doc_ids) - room][0] :]
                if tok.ours.encode(last_text, add_special_tokens=False).ids == doc_ids[-room:]:
                    assert (got.ids[rows[-1]], got.types[rows[-1]]) == _hf(tok, q, last_text, truncation="only_second")


def test_padded_batch_masks_equal_the_tokenizers(toks: list[Tok]) -> None:
    for tok in toks:
        enc = _encoder(tok)
        q = QUERIES[0]
        for got in _twice(enc, q, DOCS):
            batch = pad_batch(got.ids, got.types, pad_id=enc.pad_id)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = tok.hf([q] * len(DOCS), DOCS, max_length=L, truncation="only_second", padding=True)
            mask = np.asarray(ref["attention_mask"])
            assert np.array_equal(batch["attention_mask"], mask), tok.name
            assert np.array_equal(
                np.where(mask == 1, batch["input_ids"], -1), np.where(mask == 1, ref["input_ids"], -1)
            )


def test_cached_and_uncached_inputs_are_identical_for_every_setting(toks: list[Tok]) -> None:
    settings: list[dict[str, Any]] = [
        {},
        {"windows": True, "window_overlap": 8, "max_windows": 3},
        {"max_document_tokens": 7},
        {"max_document_tokens": 30, "truncation_side": "left", "windows": True, "window_overlap": 4},
    ]
    for tok in toks:
        cached, plain = _encoder(tok), PairEncoder(tok.ours, L)
        for kw in settings:
            for q in (QUERIES[0], LONG_QUERY):
                ref = _ours(plain, q, DOCS, **kw)
                for got in _twice(cached, q, DOCS, **kw):
                    fields = ("ids", "types", "owner", "doc_tokens", "windows", "truncated", "query_truncated")
                    assert all(getattr(got, f) == getattr(ref, f) for f in fields), (tok.name, kw)


# ----------------------------------------------------------------------------------------------- fallback
def _document_first(path: Path) -> Tokenizer:
    """The BERT tokenizer with a pair layout no prefix/middle/suffix template rebuilds: the document first."""
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $B:1 [SEP]:1 $A:0 [SEP]:0",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def test_a_layout_the_template_cannot_rebuild_falls_back_to_the_tokenizer(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    path = make_tiny_model(tmp_path / "bert", "bert", max_length=64)
    ours = _document_first(path)
    enc = PairEncoder(ours, L, cache=TokenCache("test", 2**20))
    assert not enc.assembles
    hf = PreTrainedTokenizerFast(tokenizer_object=_document_first(path))
    for q in QUERIES:
        got = _ours(enc, q, DOCS)
        assert got.token_cache_hits == got.token_cache_misses == 0  # never cached: the tokenizer builds each pair
        for i, d in enumerate(DOCS):
            ref = hf([q], [d], max_length=L, truncation="only_second", return_token_type_ids=True)
            assert (got.ids[i], got.types[i]) == (ref["input_ids"][0], ref["token_type_ids"][0]), (q, d[:30])
    windows = _ours(enc, QUERIES[0], [DOCS[5]], windows=True, window_overlap=6, max_windows=50)
    ref = hf(QUERIES[0], DOCS[5], max_length=L, truncation="only_second", stride=6, return_overflowing_tokens=True)
    assert len(windows.ids) > 1
    assert windows.ids[:-1] == [list(r) for r in ref["input_ids"][: len(windows.ids) - 1]]


def test_a_model_with_that_layout_scores_like_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    path = make_tiny_model(tmp_path / "bert", "bert", max_length=64)
    _document_first(path).save(str(path / "tokenizer.json"))
    # Read tokenizer.json as it is (transformers' BertTokenizer would rebuild BERT's own pair template).
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    rr = Reranker(path, backend="torch", quantize="fp32")
    docs = [d for d in DOCS if len(d) < 60]  # within max_length: no truncation rule involved
    q = QUERIES[0]
    ce = CrossEncoder(str(path), local_files_only=True)
    import torch

    ce.activation_fn = torch.nn.Identity()
    ref = [float(x) for x in ce.predict([(q, d) for d in docs])]
    got = rr.rerank(q, docs)
    assert [r.raw_score for r in sorted(got, key=lambda r: r.index)] == pytest.approx(ref, abs=1e-4)
    assert got.stats.token_cache_hits == got.stats.token_cache_misses == 0
    assert rr.token_cache_info() is None
    clear_engines()


# ----------------------------------------------------------------------------------------------- the cache
def test_lru_bounded_by_bytes() -> None:
    entry = ENTRY_OVERHEAD + 4 * 10  # ten int32 ids
    cache = TokenCache("t", 3 * entry)

    def encode(texts: list[str]) -> list[list[int]]:
        return [[len(t)] * 10 for t in texts]

    cache.lookup(["a", "bb", "ccc"], encode)
    assert cache.info().entries == 3 and cache.info().bytes == 3 * entry
    cache.lookup(["a"], encode)  # "a" is now the most recent
    cache.lookup(["dddd"], encode)  # evicts "bb", the least recently used
    arrays, hits = cache.lookup(["a", "ccc", "dddd"], encode)
    assert hits == 3 and [int(a[0]) for a in arrays] == [1, 3, 4]
    assert cache.lookup(["bb"], encode)[1] == 0
    info = cache.info()
    assert info.bytes <= info.max_bytes and info.entries == 3
    assert (info.hits, info.misses) == (1 + 3, 3 + 1 + 1)
    big, _ = cache.lookup(["huge"], lambda ts: [list(range(1000))])  # larger than the cache: used, not stored
    assert len(big[0]) == 1000 and cache.info().entries == 3
    with pytest.raises(ValueError):
        arrays[0][0] = 5  # entries are shared between threads: read-only


def test_resize_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TokenCache("t", 2**20)
    cache.lookup([str(i) for i in range(50)], lambda ts: [[1, 2, 3]] * len(ts))
    cache.resize(3 * (ENTRY_OVERHEAD + 12))
    assert cache.info().entries == 3
    cache.resize(0)
    assert not cache.enabled and cache.info().entries == 0
    assert cache.fill(["x"], lambda ts: [[1]]) == 0


def test_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tc.ENV, "0.5")
    assert tc._size_from_env() == 2**19
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(tc.ENV, bad)
        with pytest.raises(InvalidArgumentError, match=tc.ENV):
            tc._size_from_env()
    with pytest.raises(InvalidArgumentError):
        set_token_cache_mb(-1)


def test_one_cache_per_tokenizer_content(tmp_path: Path) -> None:
    bert = make_tiny_model(tmp_path / "bert", "bert", max_length=64)
    electra = make_tiny_model(tmp_path / "electra", "electra", max_length=64)
    roberta = make_tiny_model(tmp_path / "roberta", "roberta", max_length=64)
    a, b = load_tokenizer(bert), load_tokenizer(bert)
    assert a is not b and token_cache_for(a) is token_cache_for(b)  # same files: one cache
    assert token_cache_for(load_tokenizer(electra)) is token_cache_for(a)  # the same WordPiece tokenizer
    assert token_cache_for(load_tokenizer(roberta)) is not token_cache_for(a)
    other = _document_first(bert)  # only the post-processor differs: still a tokenizer of its own
    assert token_cache_for(other).identity != token_cache_for(a).identity


def test_threads_share_the_cache_and_get_the_tokenizers_ids(toks: list[Tok]) -> None:
    tok = toks[0]
    enc = _encoder(tok)
    assert enc.cache is not None
    enc.cache.clear()
    plain = PairEncoder(tok.ours, L)
    expected = {q: _ours(plain, q, DOCS) for q in QUERIES}
    errors: list[str] = []
    rounds = 20

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(rounds):
            q = QUERIES[int(rng.integers(len(QUERIES)))]
            pick = sorted(rng.choice(len(DOCS), size=6, replace=False).tolist())
            got = _ours(enc, q, [DOCS[i] for i in pick])
            want = [expected[q].ids[i] for i in pick]
            if got.ids != want:
                errors.append(f"thread {seed}: {q!r}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    info = enc.cache.info()
    assert info.hits + info.misses == 8 * rounds * 6
    assert info.entries == len(set(DOCS)) and info.misses < 8 * len(DOCS)


# ----------------------------------------------------------------------------------------------- end to end
DOCS_E2E = ["aspirin heart risk", "coffee and sleep", "python snake code", "blood sugar insulin " * 30]


def test_second_call_takes_every_document_from_the_cache_same_scores(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch", max_length=32)
    q = "does aspirin lower heart risk"
    rr.engine.token_cache.clear()
    first = rr.rerank(q, DOCS_E2E)
    again = rr.rerank("another query entirely", DOCS_E2E)
    same = rr.rerank(q, DOCS_E2E)
    assert (first.stats.token_cache_hits, first.stats.token_cache_misses) == (0, len(DOCS_E2E))
    assert (again.stats.token_cache_hits, again.stats.token_cache_misses) == (len(DOCS_E2E), 0)
    assert same.scores == first.scores and same.indices == first.indices
    info = rr.token_cache_info()
    assert info is not None and info.entries == len(DOCS_E2E) and info.hits == 2 * len(DOCS_E2E)


def test_async_callers_share_it(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch", max_length=32)
    rr.engine.token_cache.clear()
    sync = rr.rerank("heart", DOCS_E2E)

    async def many() -> list[Any]:
        return list(await asyncio.gather(*(rr.arerank(q, DOCS_E2E) for q in ("heart", "sleep", "code", "heart"))))

    got = asyncio.run(many())
    assert all(r.stats.token_cache_hits == len(DOCS_E2E) for r in got)
    assert got[0].scores == pytest.approx(sync.scores, abs=1e-6) and got[0].indices == sync.indices


def test_pretokenize_fills_the_cache_without_loading_the_model(tiny_model: Path) -> None:
    clear_engines()
    rr = Reranker(tiny_model, backend="torch", max_length=32)
    docs = [f"document number {i} about heart risk" for i in range(5)]
    assert rr.pretokenize([*docs, {"text": docs[0]}]) == 5
    assert not rr.local.loaded
    assert rr.pretokenize(docs) == 0  # already there
    res = rr.rerank("heart", docs)
    assert (res.stats.token_cache_hits, res.stats.token_cache_misses) == (5, 0)


def test_off_tokenizes_every_call_same_scores(tiny_model: Path) -> None:
    rr = Reranker(tiny_model, backend="torch", max_length=32)
    on = rr.rerank("heart", DOCS_E2E)
    previous = tc._max_bytes
    try:
        set_token_cache_mb(0)
        off = rr.rerank("heart", DOCS_E2E)
        assert off.stats.token_cache_hits == off.stats.token_cache_misses == 0
        assert rr.pretokenize(["new text"]) == 0
    finally:
        set_token_cache_mb((previous if previous is not None else tc._size_from_env()) / 2**20)
    assert off.scores == on.scores


def test_the_pipeline_pretokenizes_what_it_indexes(tmp_path: Path, tiny_model: Path, embedder_path: Path) -> None:
    from crossrank.retrieval.pipeline import Pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Aspirin lowers heart risk.\n\nCoffee disturbs sleep in some patients.")
    (docs / "b.txt").write_text("Pythons are snakes; python is also a language for code.")
    pipe = Pipeline(
        "tokcache", db=tmp_path / "db", embedder=embedder_path, reranker=tiny_model, create=True, backend="torch"
    )
    cache = token_cache_for(load_tokenizer(tiny_model))
    cache.clear()
    pipe.index_paths([docs], chunk_size=60, overlap=0, progress=False)
    filled = cache.info().entries
    assert filled == pipe.count() and not pipe.reranker.local.loaded
    res = pipe.search("heart risk", top_n=2)
    assert res.hits and res.candidates == filled
    assert (cache.info().hits, cache.info().misses) == (filled, 0)  # the first search tokenized only its query
    assert pipe.warmup() == 0  # everything in the collection is cached already


def test_the_server_reports_the_token_cache_in_its_metrics(tiny_model: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from crossrank.server import ServerSettings, create_app
    from crossrank.server.testing import serve_in_thread

    rr = Reranker(tiny_model, backend="torch", max_length=32)
    rr.engine.token_cache.clear()
    app = create_app(rr, ServerSettings(served_model_names=("tiny",)))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for q in ("heart", "sleep"):  # the async path: the second request's documents are all cached
            assert client.post("/v1/rerank", json={"query": q, "documents": DOCS_E2E}).status_code == 200
        text = client.get("/metrics").text
    values = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("crossrank_token")
    }
    # Misses: the server's warm-up document ("warm up"), then the first request's; hits: the second request's.
    assert values["crossrank_token_cache_misses_total"] == 1 + len(DOCS_E2E)
    assert values["crossrank_token_cache_hits_total"] == len(DOCS_E2E)
    assert values["crossrank_token_cache_entries"] == 1 + len(DOCS_E2E)
