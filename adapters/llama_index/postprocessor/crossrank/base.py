"""``CrossRankRerank``: crossrank as a LlamaIndex ``BaseNodePostprocessor``."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crossrank import Candidate, Cascade, InvalidQueryError, RankedResults, Reranker
from crossrank.integrations import RerankOptions, copy_metadata
from crossrank.integrations.candidates import to_candidates

try:
    from llama_index.core.bridge.pydantic import ConfigDict, Field
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "llama-index-core is not installed; install it with: pip install 'crossrank[llama-index]'"
    ) from exc

dispatcher = get_dispatcher(__name__)


class CrossRankRerank(RerankOptions, BaseNodePostprocessor):
    """Rerank retrieved nodes with a cross-encoder; returns new ``NodeWithScore`` copies, best first.

    The caller's nodes and their metadata are never modified. ``score`` is a Python float on the
    ``normalize`` scale; with ``keep_retrieval_score=True`` the first-stage score is kept in the
    copy's metadata as ``retrieval_score``. Options: ``model``, ``top_n``, ``threshold``,
    ``normalize``, ``reranker_kwargs``, ``metadata_mode``, and ``reranker=`` to share one loaded
    model. Fires LlamaIndex's ``ReRankStartEvent`` / ``ReRankEndEvent`` and the RERANKING callback.

    ``llm=`` (a LlamaIndex LLM, or an OpenAI-compatible URL) adds an LLM stage: the cross-encoder
    ranks every node, then the LLM reorders its top ``llm_top_k`` (``llm_mode`` ``listwise`` or
    ``pointwise``, ``llm_kwargs`` for budget and prompts). ``score`` is then the score of the last
    stage that ranked the node (scales differ between stages; the list order is the ranking).
    ``reranker=`` also takes a :class:`~crossrank.Cascade`, e.g. a late-interaction stage then the
    cross-encoder (nodes from a crossrank-indexed Chroma use their stored token vectors, found by
    their text).
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not silently ignored

    keep_retrieval_score: bool = Field(default=False, description="Keep the first-stage score in metadata.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Which metadata the cross-encoder reads with the node text."
    )

    def __init__(self, *, reranker: Reranker | Cascade | None = None, **data: Any) -> None:
        super().__init__(reranker=reranker, **data)

    @classmethod
    def class_name(cls) -> str:
        return "CrossRankRerank"

    def _candidates(self, nodes: list[NodeWithScore]) -> list[Candidate]:
        return to_candidates(
            nodes,
            NodeWithScore,
            lambda n: Candidate(
                text=n.node.get_content(metadata_mode=self.metadata_mode) or "", id=n.node.node_id, score=n.score
            ),
            takes="CrossRankRerank takes llama_index NodeWithScore objects",
            other="for LangChain Documents use langchain_crossrank.CrossRankCompressor",
        )

    def _copies(self, nodes: list[NodeWithScore], results: RankedResults) -> list[NodeWithScore]:
        out = []
        for r in results:
            src = nodes[r.index]
            out.append(NodeWithScore(node=self._copy_node(src), score=r.score))
        return out

    def _copy_node(self, src: NodeWithScore) -> Any:
        """A copy sharing no mutable state with the caller's node (text and other strings are immutable)."""
        original = src.node
        node = original.model_copy(deep=False)
        extra = {"retrieval_score": src.score} if self.keep_retrieval_score else {}
        node.metadata = copy_metadata(original.metadata, **extra)
        node.relationships = copy.deepcopy(original.relationships)
        node.excluded_embed_metadata_keys = list(original.excluded_embed_metadata_keys)
        node.excluded_llm_metadata_keys = list(original.excluded_llm_metadata_keys)
        if original.embedding is not None:
            node.embedding = list(original.embedding)
        return node

    @staticmethod
    def _query(query_bundle: QueryBundle | None) -> QueryBundle:
        if query_bundle is None or not isinstance(query_bundle.query_str, str):
            raise InvalidQueryError(
                "CrossRankRerank needs the query: call postprocess_nodes(nodes, query_str=...) or pass a QueryBundle"
            )
        return query_bundle

    @contextmanager
    def _events(self, bundle: QueryBundle, nodes: list[NodeWithScore], out: list[NodeWithScore]) -> Iterator[None]:
        """Start/end instrumentation events and the RERANKING callback around one call; fills ``out``."""
        dispatcher.event(
            ReRankStartEvent(query=bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self.model)
        )
        payload: dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: bundle.query_str,
            EventPayload.TOP_K: self.top_n or len(nodes),
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            yield
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        bundle, cands = self._query(query_bundle), self._candidates(nodes)
        out: list[NodeWithScore] = []
        with self._events(bundle, nodes, out):
            out += self._copies(nodes, self._rerank(bundle.query_str, cands))
        return out

    @dispatcher.span  # the sync path gets its span from LlamaIndex's span mixin
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        bundle, cands = self._query(query_bundle), self._candidates(nodes)
        out: list[NodeWithScore] = []
        with self._events(bundle, nodes, out):
            out += self._copies(nodes, await self._arerank(bundle.query_str, cands))
        return out
