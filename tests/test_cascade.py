"""Cascades: a cross-encoder ranks every candidate, an LLM reorders only the top k; both adapters take ``llm=``."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from crossrank import InvalidArgumentError, Reranker
from crossrank.cascade import Cascade, Stage
from crossrank.llm import LLMScorer, llm_reranker
from crossrank.results import StageScore
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings
from langchain_crossrank import CrossRankCompressor
from llama_index.postprocessor.crossrank import CrossRankRerank

QUERY = "find the relevant passages"
# ce=: what the stand-in cross-encoder scores; llm=: what the oracle LLM thinks (it disagrees on purpose).
DOCS = [
    f"passage {i} ce={ce} llm={llm}"
    for i, (ce, llm) in enumerate(zip(range(30, 0, -1), [(i * 7) % 30 for i in range(30)]))
]


class FieldScorer:
    """A stand-in cross-encoder: the raw score is the ``ce=`` number in the text."""

    identity = "field"

    def describe(self) -> ScorerInfo:
        return ScorerInfo(kind="cross-encoder", model="field-ce", backend="python", max_length=None)

    def score(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        raw = np.array([float(re.search(r"ce=(\d+)", t).group(1)) for t in texts])  # type: ignore[union-attr]
        return Scored(raw=raw, windows=[1] * len(texts), truncated=[False] * len(texts))

    async def ascore(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        return self.score(query, texts, settings)


def _llm_value(text: str) -> int:
    return int(re.search(r"llm=(\d+)", text).group(1))  # type: ignore[union-attr]


def oracle(prompt: str) -> str:
    found = re.findall(r"^\[(\d+)\] (.*)$", prompt, re.M)
    return " > ".join(f"[{k}]" for k, text in sorted(found, key=lambda p: -_llm_value(p[1])))


class OracleChat(BaseChatModel):
    """A LangChain chat model that ranks by ``llm=`` and records every prompt it saw."""

    prompts: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "oracle"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        self.prompts.append(prompt)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=oracle(prompt)))])


class OracleLlama(CustomLLM):
    """The same oracle as a LlamaIndex LLM."""

    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="oracle-llama")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text=oracle(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


def ce() -> Reranker:
    return Reranker(FieldScorer())


def expected(k: int, docs: list[str] = DOCS) -> list[int]:
    """Cross-encoder order, then the LLM's order over its top k."""
    by_ce = ce().rerank(QUERY, docs).indices
    return sorted(by_ce[:k], key=lambda i: -_llm_value(docs[i])) + by_ce[k:]


def test_llm_reorders_only_the_top_k() -> None:
    llm = OracleChat()
    cascade = Cascade([(ce(), None), (llm_reranker(llm), 10)])
    res = cascade.rerank(QUERY, DOCS)
    assert res.indices == expected(10)
    assert len(llm.prompts) == 1  # one window: the LLM saw exactly the cross-encoder's top 10
    seen = re.findall(r"^\[\d+\] (.*)$", llm.prompts[0], re.M)
    assert seen == [DOCS[i] for i in ce().rerank(QUERY, DOCS).indices[:10]]

    top, rest = res[0], res[10]
    assert top.stages == (
        StageScore("cross-encoder", float(re.search(r"ce=(\d+)", top.text).group(1)), top.stages[0].rank),  # type: ignore[union-attr]
        StageScore("llm-listwise", 10.0, 1),
    )
    assert (top.score, top.raw_score) == (10.0, 10.0)  # the last stage that ranked it
    assert rest.stages == (StageScore("cross-encoder", rest.score, 11),) and rest.rank == 11
    assert [r.first_stage_rank for r in res] == [i + 1 for i in res.indices]
    assert res.model == "field-ce > OracleChat" and res.backend == "python > langchain"
    stages = res.stats.scorer["stages"]
    assert [s["name"] for s in stages] == ["cross-encoder", "llm-listwise"] and stages[1]["candidates"] == 10
    json.dumps(res.to_dict())


def test_larger_top_k_uses_sliding_windows_and_calls_scale_with_k() -> None:
    for k, calls in ((5, 1), (20, 1), (25, 2), (30, 2)):
        llm = OracleChat()
        res = Cascade([Stage(ce()), Stage(llm_reranker(llm, window=20, step=10), keep=k)]).rerank(QUERY, DOCS)
        assert len(llm.prompts) == calls
        assert res.indices[:5] == expected(k)[:5]  # the best of the LLM's share rises to the top


def test_top_n_threshold_and_first_stage_cap() -> None:
    cascade = Cascade([(ce(), 25), (llm_reranker(OracleChat()), 10)])
    res = cascade.rerank(QUERY, DOCS, top_n=12, threshold=8.0)  # ce= below 8 is dropped before the LLM
    kept = [i for i in range(25) if 30 - i >= 8]
    assert res.indices == expected(10, [DOCS[i] for i in kept])[:12]
    reasons = {f.index: f.reason for f in res.filtered}
    assert all(reasons[i] == "top_n" for i in range(25, 30))  # over the first stage's cap
    assert [i for i, r in reasons.items() if r == "threshold"] == [i for i in range(25) if 30 - i < 8]
    assert sum(r == "top_n" for r in reasons.values()) == 5 + len(kept) - 12
    assert len(res) + len(res.filtered) == len(DOCS)


def test_duplicates_are_handled_by_the_first_stage() -> None:
    docs = [*DOCS[:6], DOCS[0]]
    res = Cascade([(Reranker(FieldScorer(), dedupe=True), None), (llm_reranker(OracleChat()), 3)]).rerank(QUERY, docs)
    assert [(f.index, f.reason, f.duplicate_of) for f in res.filtered] == [(6, "duplicate", 0)]
    assert sorted(res.indices) == list(range(6))


async def test_async_matches_sync_and_pointwise_stage() -> None:
    cascade = Cascade([(ce(), None), (llm_reranker(OracleChat()), 10)])
    assert (await cascade.arerank(QUERY, DOCS)).indices == cascade.rerank(QUERY, DOCS).indices

    def rate(prompt: str) -> str:
        return str(_llm_value(prompt) // 3)  # 0-9

    class Rater(OracleChat):
        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            self.prompts.append(str(messages[-1].content))
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=rate(str(messages[-1].content))))])

    rater = Rater()
    res = await Cascade([(ce(), None), (llm_reranker(rater, mode="pointwise"), 4)]).arerank(QUERY, DOCS)
    assert len(rater.prompts) == 4
    top4 = ce().rerank(QUERY, DOCS).indices[:4]
    assert res.indices[:4] == sorted(top4, key=lambda i: (-(_llm_value(DOCS[i]) // 3), top4.index(i)))
    assert res[0].stages[1].name == "llm-pointwise"


def test_stage_validation_and_names() -> None:
    with pytest.raises(InvalidArgumentError):
        Cascade([])
    with pytest.raises(InvalidArgumentError):
        Cascade([(ce(), 0)])
    with pytest.raises(InvalidArgumentError):
        Cascade(["not a reranker"])  # type: ignore[list-item]
    c = Cascade([ce(), (ce(), 5), (ce(), 2, "final")])
    assert [s.name for s in c.stages] == ["cross-encoder", "cross-encoder#2", "final"]
    assert "Cascade([" in repr(c)
    with pytest.raises(TypeError, match="Cascade.rerank.*'top_k'; did you mean 'top_n'"):
        c.rerank("q", ["a", "b"], top_k=1)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- the adapters' llm=


def test_langchain_compressor_with_llm() -> None:
    llm = OracleChat()
    comp = CrossRankCompressor(reranker=ce(), llm=llm, llm_top_k=10, top_n=5)
    docs = [Document(page_content=t, id=str(i), metadata={"src": i}) for i, t in enumerate(DOCS)]
    out = comp.compress_documents(docs, QUERY)
    assert [d.id for d in out] == [str(i) for i in expected(10)[:5]]
    assert len(llm.prompts) == 1
    first = out[0].metadata
    assert first["src"] == int(out[0].id or 0) and first["relevance_score"] == 10.0
    assert [s["name"] for s in first["rerank_stages"]] == ["cross-encoder", "llm-listwise"]
    assert (
        "rerank_stages" not in CrossRankCompressor(reranker=ce(), top_n=2).compress_documents(docs, QUERY)[0].metadata
    )
    assert comp.cascade is not None and CrossRankCompressor(reranker=ce()).cascade is None


async def test_langchain_chain_async_and_events() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    events: list[dict[str, Any]] = []

    class Catch(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
            events.append(data)

    comp = CrossRankCompressor(reranker=ce(), llm=OracleChat(), llm_top_k=10, top_n=3)
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(DOCS)]
    chain = comp.as_runnable()
    got = await chain.ainvoke({"documents": docs, "query": QUERY})
    assert [d.id for d in got] == [str(i) for i in expected(10)[:3]]
    comp.compress_documents(docs, QUERY, callbacks=[Catch()])
    assert events and events[0]["model"] == "field-ce > OracleChat"
    assert [s["name"] for s in events[0]["stats"]["scorer"]["stages"]] == ["cross-encoder", "llm-listwise"]


def test_llama_index_postprocessor_with_llm_in_a_query_engine() -> None:
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.retrievers import BaseRetriever

    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=1.0 - i / 100) for i, t in enumerate(DOCS)]

    class Fixed(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return list(nodes)

    llm = OracleLlama()
    post = CrossRankRerank(reranker=ce(), llm=llm, llm_top_k=10, top_n=4)
    engine = RetrieverQueryEngine.from_args(Fixed(), llm=MockLLM(), node_postprocessors=[post])
    response = engine.query(QUERY)
    assert [n.node.node_id for n in response.source_nodes] == [str(i) for i in expected(10)[:4]]
    assert len(llm.prompts) == 1
    direct = post.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert [n.score for n in direct] == [10.0, 9.0, 8.0, 7.0]  # the LLM stage's synthetic rank scores


def test_adapters_accept_a_ready_llm_scorer_or_reranker() -> None:
    scorer = LLMScorer(OracleChat(), mode="listwise", window=5, step=3)
    a = CrossRankCompressor(reranker=ce(), llm=scorer, llm_top_k=10, top_n=None)
    b = CrossRankRerank(reranker=ce(), llm=Reranker(scorer), llm_top_k=10, top_n=None)
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(DOCS)]
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCS)]
    assert [d.id for d in a.compress_documents(docs, QUERY)] == [
        n.node.node_id for n in b.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    ]
    with pytest.raises(InvalidArgumentError):
        CrossRankCompressor(reranker=ce(), llm=OracleChat(), llm_top_k=0)
    with pytest.raises(InvalidArgumentError):
        CrossRankCompressor(reranker=ce(), llm=OracleChat(), llm_mode="pairwise")


def test_real_tiny_cross_encoder_then_llm(tiny: Reranker) -> None:
    """The same cascade over a real (tiny, random) cross-encoder model."""
    llm = OracleChat()
    res = Cascade([(tiny, None), (llm_reranker(llm), 5)]).rerank(QUERY, DOCS[:12], top_n=8)
    by_ce = tiny.rerank(QUERY, DOCS[:12]).indices
    assert res.indices == (sorted(by_ce[:5], key=lambda i: -_llm_value(DOCS[i])) + by_ce[5:])[:8]
    assert len(llm.prompts) == 1 and res[0].stages[0].name == "cross-encoder"


def test_fast_preset_prunes_on_a_prefix_then_ranks_the_top_k_in_full(tiny_model: Any) -> None:
    """``Cascade.fast``: one shared model, short over all candidates, full length over the best k."""
    docs = [f"document {i} " + " ".join(f"w{(i * 13 + j) % 50}" for j in range(90)) for i in range(12)]
    fast = Cascade.fast(tiny_model, first_length=24, keep=5, backend="onnx", quantize="fp32")
    prune, full = (s.reranker for s in fast.stages)
    assert [s.name for s in fast.stages] == ["prune", "full"] and fast.stages[1].keep == 5
    assert prune.max_length == 24 and full.max_length == Reranker(tiny_model).max_length
    assert prune.local.engine is full.local.engine  # one loaded model
    res = fast.rerank("w7 w8 w9", docs)
    assert len(res) == len(docs)
    short = prune.score("w7 w8 w9", docs)
    long = full.score("w7 w8 w9", docs)
    top5 = sorted(range(12), key=lambda i: -short[i])[:5]
    assert [r.index for r in res][:5] == sorted(top5, key=lambda i: -long[i])  # the full model orders the k
    assert [r.index for r in res][5:] == sorted(set(range(12)) - set(top5), key=lambda i: -short[i])
    assert all([s.name for s in r.stages] == ["prune", "full"] for r in list(res)[:5])
    assert all(isinstance(r.score, float) for r in res)
    with pytest.raises(InvalidArgumentError, match="not shorter"):
        Cascade.fast(tiny_model, first_length=4096)
    with pytest.raises(InvalidArgumentError, match="first_length"):
        Cascade.fast(tiny_model, first_length=8)


def test_fast_preset_takes_a_smaller_first_model(tiny_model: Any, tmp_path: Any) -> None:
    """``first_model``: the prune pass is another (smaller) reranker at its own length; the full model orders the k."""
    from crossrank.testing import make_tiny_cross_encoder

    small = make_tiny_cross_encoder(tmp_path / "small", seed=3, model_max_length=64)
    docs = [f"document {i} " + " ".join(f"w{(i * 7 + j) % 40}" for j in range(40)) for i in range(10)]
    fast = Cascade.fast(tiny_model, first_model=small, keep=4, backend="onnx", quantize="fp32")
    prune, full = (s.reranker for s in fast.stages)
    assert prune.model_name != full.model_name and prune.max_length == 64 != full.max_length
    res = fast.rerank("w3 w4", docs)
    short, long = prune.score("w3 w4", docs), full.score("w3 w4", docs)
    top4 = sorted(range(10), key=lambda i: -short[i])[:4]
    assert [r.index for r in res][:4] == sorted(top4, key=lambda i: -long[i])
