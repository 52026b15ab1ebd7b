"""A bounded, thread-safe LRU of raw scores, so repeated (query, document) pairs skip the model.

Keys include the engine identity (model content hash + backend) and every setting that changes a
score (max_length, long-document mode), so a cache can never serve a score from another setup.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

CachedScore = tuple[float, int, bool]  # raw score, windows used, truncated


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    capacity: int


class ScoreCache:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple[str, str, str], CachedScore] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(setup: str, query: str, text: str) -> tuple[str, str, str]:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return (setup, query, digest)

    def get(self, key: tuple[str, str, str]) -> CachedScore | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, str, str], value: CachedScore) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._data), self.capacity)
