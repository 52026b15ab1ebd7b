"""A BM25 first stage (bm25s), for evaluation and the hybrid pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crossrank.errors import missing_extra


class BM25Index:
    """Lexical retrieval over an in-memory corpus; ``search`` returns (doc_id, score) best first."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], *, stemmer: str | None = None) -> None:
        try:
            import bm25s
        except ImportError as exc:
            raise missing_extra("bm25s", "hybrid") from exc
        self._bm25s: Any = bm25s
        self.ids = list(ids)
        self._stemmer: Any = None
        if stemmer:
            try:
                import Stemmer

                self._stemmer = Stemmer.Stemmer(stemmer)
            except ImportError:
                self._stemmer = None
        tokens = bm25s.tokenize(list(texts), stopwords="en", stemmer=self._stemmer, show_progress=False)
        self._retriever = bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int = 100) -> list[tuple[str, float]]:
        k = min(k, len(self.ids))
        if k == 0:
            return []
        q = self._bm25s.tokenize([query], stopwords="en", stemmer=self._stemmer, show_progress=False)
        docs, scores = self._retriever.retrieve(q, k=k, show_progress=False)
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0])]
