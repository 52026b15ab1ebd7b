"""A BM25 first stage (bm25s), for evaluation and the hybrid pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossrank.errors import missing_extra


class BM25Index:
    """Lexical retrieval over an in-memory corpus; ``search`` returns (doc_id, score) best first.

    Equal scores are ordered by document id, not by position in the index, so two indexes over the
    same documents in a different order (a BEIR corpus file and a Chroma collection, say) give the
    same list: the hybrid first stage depends on it.
    """

    def __init__(self, ids: Sequence[str], texts: Sequence[str], *, stemmer: str | None = None) -> None:
        try:
            import bm25s
        except ImportError as exc:
            raise missing_extra("bm25s", "hybrid") from exc
        self._bm25s: Any = bm25s
        self.ids = list(ids)
        # Position of each document in id order: the tie-break key of ``search``.
        self._id_order = np.empty(len(self.ids), dtype=np.int64)
        self._id_order[sorted(range(len(self.ids)), key=self.ids.__getitem__)] = np.arange(len(self.ids))
        self._stemmer: Any = None
        if stemmer:
            try:
                import Stemmer

                self._stemmer = Stemmer.Stemmer(stemmer)
            except ImportError:
                self._stemmer = None
        tokens = bm25s.tokenize(list(texts), stopwords="en", stemmer=self._stemmer, show_progress=False)
        self._retriever: Any = None  # None: no document has a term (an empty collection, stopwords only)
        if tokens.vocab:
            self._retriever = bm25s.BM25()
            self._retriever.index(tokens, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document for ``query``, in index order (zeros without a known term)."""
        tokens = self._bm25s.tokenize(
            [query], stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )[0]
        if not tokens or self._retriever is None:
            return np.zeros(len(self.ids), dtype=np.float64)
        return np.asarray(self._retriever.get_scores(list(tokens)), dtype=np.float64)

    def search(self, query: str, k: int = 100) -> list[tuple[str, float]]:
        """The ``k`` best documents, score descending, equal scores by id."""
        n = len(self.ids)
        k = min(k, n)
        if k <= 0:
            return []
        scores = self.scores(query)
        if k < n:
            kth = np.partition(scores, n - k)[n - k]  # the k-th largest score: everything tied with it competes
            pool = np.flatnonzero(scores >= kth)
        else:
            pool = np.arange(n)
        top = pool[np.lexsort((self._id_order[pool], -scores[pool]))][:k]
        return [(self.ids[int(i)], float(scores[i])) for i in top]
