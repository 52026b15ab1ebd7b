"""Rerank with an LLM: the user's LangChain / LlamaIndex model or an OpenAI-compatible server.

>>> from crossrank.llm import llm_reranker
>>> rr = llm_reranker("http://127.0.0.1:8000", model="qwen3-8b", mode="listwise")   # doctest: +SKIP
>>> rr.rerank("does aspirin prevent heart attacks?", docs, top_n=5)                  # doctest: +SKIP

:class:`LLMScorer` plugs into the :class:`~crossrank.Reranker` like any scorer, and into a
:class:`~crossrank.cascade.Cascade` after a cross-encoder (the usual setup: the cross-encoder
ranks 100 candidates, the LLM reorders the top 10). The HTTP client needs ``httpx``
(``pip install 'crossrank[llm]'``); framework LLMs need only their framework.
"""

from __future__ import annotations

from typing import Any

from crossrank.llm.clients import (
    LangChainClient,
    LlamaIndexClient,
    LLMCallError,
    LLMClient,
    LLMError,
    LLMReply,
    OpenAICompatibleClient,
    as_client,
)
from crossrank.llm.parsing import Permutation, Ratings, expected_rating, parse_permutation, parse_ratings
from crossrank.llm.prompts import LLMPrompts, approx_tokens
from crossrank.llm.scorer import MODES, LLMScorer, plan_windows
from crossrank.reranker import Reranker


def llm_reranker(llm: Any, *, normalize: str = "none", **options: Any) -> Reranker:
    """A :class:`~crossrank.Reranker` scoring with ``LLMScorer(llm, **options)``.

    The Reranker's score cache stays off: listwise scores depend on the whole candidate list,
    and a failed prompt's fallback scores must not be reused.
    """
    return Reranker(LLMScorer(llm, **options), normalize=normalize)


__all__ = [
    "MODES",
    "LLMCallError",
    "LLMClient",
    "LLMError",
    "LLMPrompts",
    "LLMReply",
    "LLMScorer",
    "LangChainClient",
    "LlamaIndexClient",
    "OpenAICompatibleClient",
    "Permutation",
    "Ratings",
    "approx_tokens",
    "as_client",
    "expected_rating",
    "llm_reranker",
    "parse_permutation",
    "parse_ratings",
    "plan_windows",
]
