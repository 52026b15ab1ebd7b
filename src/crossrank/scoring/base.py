"""The scorer seam: what the :class:`~crossrank.Reranker` needs from anything that scores texts.

A scorer turns ``(query, texts)`` into one raw relevance score per text. The Reranker owns
everything around that — validation, duplicate texts, the score cache, scales, threshold, top_n,
fusion and the result records — so a local cross-encoder, a causal-LM yes/no reranker, a remote
rerank API or an LLM all rank through the same code and give the same kind of results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

ScoreScale = Literal["logit", "probability", "rating", "rank", "similarity"]


@dataclass(frozen=True)
class ScorerInfo:
    """What a scorer is, for results, logs and ``/info``-style reports.

    ``kind`` names the scoring method (``cross-encoder``, ``causal-lm``, ``remote``, ...);
    ``scale`` says what a raw score is: a ``logit`` (``normalize="sigmoid"`` turns it into a
    probability), already a ``probability`` in [0, 1], an LLM's ``rating`` on its prompt's scale
    (e.g. 0-10), or a ``rank``: a synthetic score that only encodes an order (higher is better;
    listwise LLM ranking), where only ``none`` and ``minmax`` normalization are meaningful; or a
    ``similarity``: a sum or mean of vector similarities (late interaction's MaxSim), comparable
    within one model and query length, not a probability (``sigmoid`` is only a monotone squash).
    """

    kind: str
    model: str
    backend: str
    max_length: int | None
    scale: ScoreScale = "logit"


@dataclass(frozen=True)
class ScoreSettings:
    """Per-call settings that change a score, so they are part of every cache key.

    ``long_documents``: ``truncate`` (one pass per text, cut to fit) or ``windows`` (overlapping
    windows of ``window_overlap`` tokens, at most ``max_windows``, combined by ``aggregate``).
    ``max_document_tokens``: cut every document to this many of its own tokens first (Cohere's
    ``max_tokens_per_doc``); ``truncation_side``: which end a cut keeps, ``right`` (the start,
    the default) or ``left`` (the end, TEI's ``truncation_direction: Left``); ``instruction``:
    this call's task instruction for rerankers whose prompt has an instruction slot. Scorers that
    cannot apply the last three say so (:meth:`per_call_options`), never drop them silently.
    """

    long_documents: str = "truncate"
    window_overlap: int = 64
    max_windows: int = 16
    aggregate: str = "max"
    max_document_tokens: int | None = None
    truncation_side: str = "right"
    instruction: str | None = None

    def per_call_options(self) -> list[str]:
        """The names of the options set away from their defaults that only some scorers can apply."""
        out = []
        if self.max_document_tokens is not None:
            out.append("max_document_tokens")
        if self.truncation_side != "right":
            out.append("truncation_side")
        if self.instruction is not None:
            out.append("instruction")
        return out

    def key(self) -> str:
        """A short string naming these settings, for cache keys."""
        base = (
            "t" if self.long_documents != "windows" else f"w{self.window_overlap}x{self.max_windows}:{self.aggregate}"
        )
        if self.max_document_tokens is not None:
            base += f":d{self.max_document_tokens}"
        if self.truncation_side != "right":
            base += f":{self.truncation_side}"
        if self.instruction is not None:
            base += ":i" + hashlib.sha256(self.instruction.encode("utf-8")).hexdigest()[:16]
        return base


@dataclass
class ScoreStats:
    """What one scoring call cost: model inputs and their tokens, out-of-memory retries, time per phase."""

    pairs: int = 0
    tokens: int = 0  # tokens of every model input run (special and prompt tokens included, padding not)
    batch_retries: int = 0
    tokenize_s: float = 0.0
    model_s: float = 0.0
    token_cache_hits: int = 0  # documents whose token ids came from the token cache
    token_cache_misses: int = 0  # documents tokenized (and then cached)


@dataclass
class Scored:
    """One raw score per text (input order), with how each text was fitted to the model.

    ``details`` carries scorer-specific counters (an LLM's calls, tokens and parse failures) as
    JSON-serialisable builtins; the Reranker reports them in ``RerankStats.scorer``.
    """

    raw: np.ndarray
    windows: list[int]
    truncated: list[bool]
    query_truncated: bool = False
    stats: ScoreStats = field(default_factory=ScoreStats)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Scored:
        return cls(raw=np.empty(0, dtype=np.float64), windows=[], truncated=[])


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores texts against a query.

    ``score`` and ``ascore`` must return the same scores for the same input; ``ascore`` must not
    block the event loop. ``identity`` must change whenever the scores could (model content,
    backend, precision, max length), because the Reranker's cache is keyed by it. Scorers must be
    safe to call from many threads at once.
    """

    @property
    def identity(self) -> str:
        """A stable name for cache keys."""
        ...

    def describe(self) -> ScorerInfo:
        """What this scorer is (cheap: never loads a model)."""
        ...

    def score(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        """Raw scores for ``texts`` against ``query``, in input order."""
        ...

    async def ascore(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        """Async :meth:`score`."""
        ...
