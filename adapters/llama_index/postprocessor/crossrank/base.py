"""``CrossRankRerank``: crossrank as a LlamaIndex ``BaseNodePostprocessor``."""

from __future__ import annotations

from typing import Any

from crossrank import Candidate, InvalidDocumentTypeError, InvalidQueryError, RankedResults, Reranker
from crossrank.inputs import check_output_options
from crossrank.integrations.copying import copy_metadata
from crossrank.model_files import DEFAULT_MODEL

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
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


class CrossRankRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a cross-encoder; returns new ``NodeWithScore`` copies, best first.

    The caller's nodes and their metadata are never modified. ``score`` is a Python float on the
    ``normalize`` scale; with ``keep_retrieval_score=True`` the first-stage score is kept in the
    copy's metadata as ``retrieval_score``.
    """

    model: str = Field(default=DEFAULT_MODEL, description="Hugging Face id or local directory of the cross-encoder.")
    top_n: int | None = Field(default=5, description="How many nodes to keep (None keeps all).")
    threshold: float | None = Field(default=None, description="Drop nodes scoring below this, on the normalize scale.")
    normalize: str = Field(default="none", description="Score scale: none, sigmoid, softmax or minmax.")
    keep_retrieval_score: bool = Field(default=False, description="Keep the first-stage score in metadata.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Which metadata the cross-encoder reads with the node text."
    )
    reranker_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra options for crossrank.Reranker.")
    _reranker: Reranker = PrivateAttr()

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        if reranker is not None and "model" not in data:
            data["model"] = reranker.model_name
        super().__init__(**data)
        check_output_options(self.top_n, self.threshold, self.normalize)
        self._reranker = reranker or Reranker(self.model, normalize=self.normalize, **self.reranker_kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "CrossRankRerank"

    @property
    def reranker(self) -> Reranker:
        return self._reranker

    def _candidates(self, nodes: list[NodeWithScore]) -> list[Candidate]:
        out = []
        for i, n in enumerate(nodes):
            if not isinstance(n, NodeWithScore):
                raise InvalidDocumentTypeError(
                    f"CrossRankRerank takes llama_index NodeWithScore objects; item {i} is {type(n).__name__} "
                    "(for LangChain Documents use langchain_crossrank.CrossRankCompressor)"
                )
            text = n.node.get_content(metadata_mode=self.metadata_mode) or ""
            out.append(Candidate(text=text, id=n.node.node_id, score=n.score))
        return out

    def _copies(self, nodes: list[NodeWithScore], results: RankedResults) -> list[NodeWithScore]:
        out = []
        for r in results:
            src = nodes[r.index]
            node = src.node.model_copy(deep=False)
            node.metadata = copy_metadata(src.node.metadata)
            if self.keep_retrieval_score:
                node.metadata["retrieval_score"] = src.score
            out.append(NodeWithScore(node=node, score=r.score))
        return out

    def _query(self, query_bundle: QueryBundle | None) -> str:
        if query_bundle is None or not isinstance(query_bundle.query_str, str):
            raise InvalidQueryError(
                "CrossRankRerank needs the query: call postprocess_nodes(nodes, query_str=...) or pass a QueryBundle"
            )
        return query_bundle.query_str

    def _start(self, query_bundle: QueryBundle, nodes: list[NodeWithScore]) -> None:
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self.model)
        )

    def _payload(self, query: str, nodes: list[NodeWithScore]) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        assert query_bundle is not None
        cands = self._candidates(nodes)
        self._start(query_bundle, nodes)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(query, nodes)) as event:
            results = self._reranker.rerank(query, cands, top_n=self.top_n, threshold=self.threshold)
            new_nodes = self._copies(nodes, results)
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        assert query_bundle is not None
        cands = self._candidates(nodes)
        self._start(query_bundle, nodes)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(query, nodes)) as event:
            results = await self._reranker.arerank(query, cands, top_n=self.top_n, threshold=self.threshold)
            new_nodes = self._copies(nodes, results)
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
