"""Scorers: what turns (query, texts) into raw relevance scores, beneath the :class:`~crossrank.Reranker`.

- :mod:`.base` — the :class:`Scorer` protocol and the records that cross the seam;
- :mod:`.local` — :class:`LocalScorer`, a Hugging Face reranker run in this process;
- :mod:`.engine` — loaded models shared process-wide; :mod:`.batching` — async micro-batching;
- :mod:`.families` — per model family: pair/prompt encoding and the score head;
- :mod:`.pairs` — pair tokenizing with truncation that never eats the query, and sliding windows;
- :mod:`.token_cache` — documents' token ids, kept per tokenizer so a chunk is tokenized once.
"""

from crossrank.scoring.base import Scored, Scorer, ScorerInfo, ScoreSettings, ScoreStats
from crossrank.scoring.local import LocalScorer

__all__ = ["LocalScorer", "ScoreSettings", "ScoreStats", "Scored", "Scorer", "ScorerInfo"]
