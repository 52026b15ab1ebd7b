"""The options and the scoring calls both framework adapters share.

With ``llm=`` (the framework's own LLM object, an OpenAI-compatible URL, or a ready
:class:`~crossrank.llm.LLMScorer` / :class:`~crossrank.Reranker`) the adapters run a
:class:`~crossrank.cascade.Cascade`: the cross-encoder ranks every candidate, then the LLM reorders
its top ``llm_top_k``; ``top_n`` / ``threshold`` / ``normalize`` keep their meaning (the threshold
applies to the cross-encoder's scores, before the LLM sees anything).

``reranker=`` also takes a ready :class:`~crossrank.cascade.Cascade`, e.g. late interaction over
every candidate then the cross-encoder over its best 30 (``Cascade([(late, None), (Reranker(ce),
30)])``); ``threshold`` / ``normalize`` then apply to its first stage, and ``llm=`` appends the LLM
after its last stage. Candidates that came from a Chroma collection crossrank indexed with
``--late-interaction`` find their stored token vectors by the hash of their text (the Document's
``page_content`` / the node's text): the ids the adapters pass are the framework's Document / node
ids, which need not be Chroma's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from crossrank.cascade import Cascade
from crossrank.errors import InvalidArgumentError
from crossrank.inputs import check_output_options
from crossrank.model_files import default_model
from crossrank.reranker import Reranker
from crossrank.results import Candidate, RankedResults


class RerankOptions(BaseModel):
    """Pydantic fields and calls shared by ``CrossRankCompressor`` and ``CrossRankRerank``.

    Pass ``reranker=`` to share one loaded model between components; the adapter's own ``top_n`` /
    ``threshold`` apply to its calls, and ``normalize`` defaults to that reranker's own scale (so a
    threshold chosen on the reranker's scores means the same here). ``model`` and
    ``reranker_kwargs`` describe a reranker the adapter builds, so they are refused beside
    ``reranker=`` unless ``model`` names the same model.
    """

    model: str = Field(
        default_factory=default_model,
        description="Hugging Face id or local directory of the reranker "
        "(default: $CROSSRANK_MODEL, else ms-marco-MiniLM-L6-v2).",
    )
    top_n: int | None = Field(default=5, description="How many results to keep (None keeps all).")
    threshold: float | None = Field(
        default=None, description="Drop results scoring below this, on the normalize scale."
    )
    normalize: str = Field(
        default="none",
        description="Score scale: none, sigmoid, softmax or minmax (default: a given reranker's own, else none).",
    )
    reranker_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra options for crossrank.Reranker.")
    llm: Any = Field(
        default=None,
        exclude=True,
        description="An LLM that reorders the cross-encoder's top llm_top_k: a LangChain chat model, a LlamaIndex "
        "LLM, an OpenAI-compatible URL, or a crossrank LLMScorer / Reranker (None: cross-encoder only).",
    )
    llm_mode: str = Field(default="listwise", description="How the LLM ranks: listwise (RankGPT) or pointwise.")
    llm_top_k: int = Field(default=10, description="How many of the cross-encoder's best the LLM reorders.")
    llm_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra options for crossrank.llm.LLMScorer (budget, prompts, window ...)."
    )
    _reranker: Reranker = PrivateAttr()
    _cascade: Cascade | None = PrivateAttr(default=None)

    def __init__(self, *, reranker: Reranker | Cascade | None = None, **data: Any) -> None:
        given = reranker if isinstance(reranker, Cascade) else None
        first = given.stages[0].reranker if given is not None else reranker
        if first is not None and not isinstance(first, Reranker):
            raise InvalidArgumentError(
                f"reranker= takes a crossrank.Reranker or Cascade, got {type(reranker).__name__}; "
                "pass a model id or folder as model= instead"
            )
        if "normalize" in data.get("reranker_kwargs", {}):
            raise InvalidArgumentError("pass normalize= to the adapter itself, not inside reranker_kwargs")
        if reranker is None and " > " in str(data.get("model", "")):
            raise InvalidArgumentError(
                f"model={data['model']!r} names a cascade's stages (an adapter saved with reranker=Cascade(...)): "
                "a cascade is not rebuilt from its name; pass reranker=Cascade([...]) again"
            )
        if reranker is not None:
            _check_shared(reranker, data)
            data["model"] = reranker.model_name
            data.setdefault("normalize", first.normalize if first is not None else "none")
        super().__init__(**data)
        check_output_options(self.top_n, self.threshold, self.normalize)
        self._reranker = first or Reranker(self.model, normalize=self.normalize, **self.reranker_kwargs)
        self._cascade = given
        if self.llm is not None:
            stages = list(given.stages) if given is not None else [(self._reranker, None)]
            self._cascade = Cascade([*stages, (self._llm_reranker(), self.llm_top_k)])

    def _llm_reranker(self) -> Reranker:
        """The second stage from ``llm``: a Reranker as given, else one over an LLMScorer."""
        if isinstance(self.llm_top_k, bool) or not isinstance(self.llm_top_k, int) or self.llm_top_k < 1:
            raise InvalidArgumentError(f"llm_top_k must be an int >= 1, got {self.llm_top_k!r}")
        if isinstance(self.llm, Reranker):
            return self.llm
        from crossrank.llm import LLMScorer  # lazy: the LLM layer is needed only with llm=

        if isinstance(self.llm, LLMScorer):
            return Reranker(self.llm)
        return Reranker(LLMScorer(self.llm, mode=self.llm_mode, **self.llm_kwargs))

    @property
    def reranker(self) -> Reranker:
        """The core reranker this adapter scores with (the first stage when ``llm`` is set)."""
        return self._reranker

    @property
    def cascade(self) -> Cascade | None:
        """The cascade this adapter runs (``reranker=`` a Cascade, or cross-encoder -> LLM with ``llm``), else None."""
        return self._cascade

    def _rerank(self, query: str, candidates: Sequence[Candidate]) -> RankedResults:
        runner = self._cascade or self._reranker
        return runner.rerank(query, candidates, top_n=self.top_n, threshold=self.threshold, normalize=self.normalize)

    async def _arerank(self, query: str, candidates: Sequence[Candidate]) -> RankedResults:
        runner = self._cascade or self._reranker
        return await runner.arerank(
            query, candidates, top_n=self.top_n, threshold=self.threshold, normalize=self.normalize
        )

    def _report(self, query: str, candidates: int, results: RankedResults, started: float) -> dict[str, Any]:
        """What one call did, for the framework's callbacks / instrumentation."""
        return {
            "query": query,
            "candidates": candidates,
            "top_n": self.top_n,
            "returned": len(results),
            "model": results.model,
            "backend": results.backend,
            "seconds": time.perf_counter() - started,
            "scores": results.scores,
            "filtered": len(results.filtered),
            "stats": asdict(results.stats),
        }


def _check_shared(reranker: Reranker | Cascade, data: dict[str, Any]) -> None:
    """Options that would describe another model than the shared ``reranker`` are errors, not ignored."""
    if data.get("reranker_kwargs"):
        raise InvalidArgumentError(
            "reranker_kwargs configure a reranker the adapter builds; with reranker= set those options on "
            f"that Reranker instead (got {sorted(data['reranker_kwargs'])})"
        )
    named = data.get("model")
    if named is not None and named != reranker.model_name:
        raise InvalidArgumentError(
            f"model={named!r} but reranker= scores with {reranker.model_name!r}: pass one of them "
            "(results report the model that scored)"
        )
