"""Teacher scores from crossrank's fast backend, cached on disk so a re-run never scores a pair twice.

Scoring every candidate of every training query is the slowest step before training starts. The
cache is an SQLite file per (teacher fingerprint, backend, max_length): a key is the hash of the
query and the document text, so it stays valid whichever run, split or candidate list asks, and it
is committed after every query, so an interrupted run loses at most one query's scores.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from crossrank.reranker import Reranker


def pair_key(query: str, text: str) -> str:
    """The cache key of a (query, document text) pair."""
    return hashlib.sha1(f"{query}\x1f{text}".encode()).hexdigest()


class ScoreCache:
    """A persistent map from (query, text) to the teacher's raw score (SQLite, one table)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path))
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        """The cached scores among ``keys``."""
        out: dict[str, float] = {}
        for s in range(0, len(keys), 500):
            part = list(keys[s : s + 500])
            rows = self._db.execute(
                f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(part))})", part
            ).fetchall()
            out.update((k, float(v)) for k, v in rows)
        return out

    def put_many(self, items: Iterable[tuple[str, float]]) -> None:
        """Store scores and commit (so they survive an interrupt)."""
        self._db.executemany("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", list(items))
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        """Close the database file."""
        self._db.close()


class Teacher:
    """A cross-encoder teacher: a :class:`~crossrank.Reranker` on the fast backend plus its score cache.

    ``cache_dir`` holds one cache file per teacher model, backend and ``max_length``, so changing
    any of them never serves stale scores.
    """

    def __init__(
        self,
        model: str,
        cache_dir: str | Path,
        *,
        backend: str = "auto",
        max_length: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.reranker = Reranker(model, backend=backend, max_length=max_length, batch_size=batch_size)
        self.reranker.warmup()  # resolves "auto" to what really scores, which names the cache file
        info = self.reranker.info
        tag = f"{info.fingerprint}-{self.reranker.backend_name}-{self.reranker.max_length}"
        self.cache = ScoreCache(Path(cache_dir) / f"teacher-{tag}.sqlite")
        self.scored = 0
        self.cached = 0

    @property
    def model_name(self) -> str:
        return self.reranker.model_name

    def describe(self) -> dict[str, Any]:
        """Model, backend and length, for reports and model cards."""
        return {
            "model": self.reranker.model_name,
            "backend": self.reranker.backend_name,
            "max_length": self.reranker.max_length,
            "pairs_scored": self.scored,
            "pairs_from_cache": self.cached,
        }

    def score_lists(
        self,
        items: Sequence[tuple[str, str, Sequence[str]]],
        *,
        progress: bool = True,
        desc: str = "teacher scores",
    ) -> dict[str, list[float]]:
        """Scores for ``(qid, query, texts)`` items: qid -> raw scores in ``texts`` order.

        Cached pairs are read back; only the rest reach the model, one query per call (the
        reranker batches within it), and each query's scores are stored as soon as they exist.
        """
        from tqdm.auto import tqdm

        out: dict[str, list[float]] = {}
        bar = tqdm(items, unit="query", desc=desc, disable=not progress)
        for qid, query, texts in bar:
            keys = [pair_key(query, t) for t in texts]
            have = self.cache.get_many(keys)
            missing = [i for i, k in enumerate(keys) if k not in have]
            if missing:
                scores = self.reranker.score(query, [texts[i] for i in missing])
                new = {keys[i]: float(s) for i, s in zip(missing, scores)}
                self.cache.put_many(new.items())
                have.update(new)
            self.scored += len(missing)
            self.cached += len(keys) - len(missing)
            out[qid] = [have[k] for k in keys]
            bar.set_postfix(cached=self.cached, scored=self.scored)
        return out
