"""A bounded, thread-safe LRU of documents' token ids, so a chunk is tokenized once, not once per query.

RAG reranks the same chunks for many queries, and a document's tokens never change: only the
query's do. Pair encoders look each document up here (by a hash of its text) and tokenize only
the misses, in one batch; pairs are then assembled from the query's ids and the cached ids with
the model's pair template, exactly as from freshly tokenized ids (see :mod:`.pairs`).

One cache per tokenizer: its identity is a hash of the tokenizer's full serialisation
(vocabulary, normalizer, pre-tokenizer, model, added tokens), which is everything that changes a
text's ids, so two engines of one model (different backends, devices, precisions) share one cache
and a different tokenizer never reads another's entries. Caches are held by the scorers and
engines that use them and dropped with the last of them.

Size: ``CROSSRANK_TOKEN_CACHE_MB`` (default 64; 0 turns caching off) or :func:`set_token_cache_mb`.
Entries are int32 arrays, about 4 bytes a token plus a fixed overhead, so 64 MB hold roughly
75,000 chunks of 200 tokens. Least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from crossrank.errors import InvalidArgumentError

DEFAULT_MB = 64.0
ENV = "CROSSRANK_TOKEN_CACHE_MB"
# What one entry costs besides its ids: the array header, the 16-byte key and the LRU's link.
ENTRY_OVERHEAD = 200

Encode = Callable[[list[str]], Sequence[Sequence[int]]]


@dataclass(frozen=True)
class TokenCacheInfo:
    """Lifetime lookups that found a document (``hits``) or tokenized it (``misses``), and the current size."""

    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int


def text_key(text: str) -> bytes:
    """The cache key of a text: a 128-bit BLAKE2b digest (lone surrogates allowed, as Python strings may hold them)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TokenCache:
    """Token ids (no special tokens) of documents, for one tokenizer, bounded by bytes, least recently used out."""

    def __init__(self, identity: str, max_bytes: int) -> None:
        self.identity = identity
        self.max_bytes = max(0, int(max_bytes))
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """False when the size is 0: encoders then tokenize directly, without hashing."""
        return self.max_bytes > 0

    def lookup(self, texts: Sequence[str], encode: Encode) -> tuple[list[np.ndarray], int]:
        """Each text's ids (read-only int32 arrays) and how many came from the cache.

        Misses are tokenized by ``encode`` in one batch, outside the lock (two threads missing the
        same text may both tokenize it; the result is the same), then stored.
        """
        keys = [text_key(t) for t in texts]
        found: list[np.ndarray | None] = []
        with self._lock:
            for k in keys:
                ids = self._data.get(k)
                if ids is not None:
                    self._data.move_to_end(k)
                found.append(ids)
            missing = [i for i, ids in enumerate(found) if ids is None]
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = encode([texts[i] for i in missing])
            arrays = [_frozen(ids) for ids in fresh]
            with self._lock:
                for i, arr in zip(missing, arrays):
                    found[i] = arr
                    self._store(keys[i], arr)
        return [a for a in found if a is not None], len(keys) - len(missing)

    def fill(self, texts: Sequence[str], encode: Encode) -> int:
        """Tokenize the texts not cached yet and store them (not counted as lookups); returns how many were added."""
        if not self.enabled:
            return 0
        keys: dict[bytes, str] = {}
        with self._lock:
            for t in texts:
                k = text_key(t)
                if k not in self._data and k not in keys:
                    keys[k] = t
        if not keys:
            return 0
        arrays = [_frozen(ids) for ids in encode(list(keys.values()))]
        with self._lock:
            for k, arr in zip(keys, arrays):
                self._store(k, arr)
        return len(keys)

    def _store(self, key: bytes, arr: np.ndarray) -> None:
        """Insert under the lock, evicting the least recently used entries beyond ``max_bytes``."""
        cost = arr.nbytes + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return  # larger than the whole cache: used for this call, never stored
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes + ENTRY_OVERHEAD
        self._data[key] = arr
        self._bytes += cost
        while self._bytes > self.max_bytes:
            _, gone = self._data.popitem(last=False)
            self._bytes -= gone.nbytes + ENTRY_OVERHEAD

    @property
    def full(self) -> bool:
        """Whether another typical entry would evict one (prefilling stops here)."""
        with self._lock:
            return self._bytes + ENTRY_OVERHEAD * 2 > self.max_bytes

    def resize(self, max_bytes: int) -> None:
        """Change the bound now (evicting the oldest entries if it shrinks); 0 empties and disables the cache."""
        with self._lock:
            self.max_bytes = max(0, int(max_bytes))
            while self._data and self._bytes > self.max_bytes:
                _, gone = self._data.popitem(last=False)
                self._bytes -= gone.nbytes + ENTRY_OVERHEAD

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def info(self) -> TokenCacheInfo:
        with self._lock:
            return TokenCacheInfo(self.hits, self.misses, len(self._data), self._bytes, self.max_bytes)


def _frozen(ids: Sequence[int]) -> np.ndarray:
    """A read-only int32 copy: entries are shared between threads and must never be written."""
    arr = np.asarray(ids, dtype=np.int32)
    arr.setflags(write=False)
    return arr


def tokenizer_identity(tokenizer: Tokenizer) -> str:
    """A hash of the tokenizer's whole serialisation: equal exactly when it gives every text the same ids."""
    return hashlib.blake2b(tokenizer.to_str().encode("utf-8"), digest_size=16).hexdigest()


def _size_from_env() -> int:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return int(DEFAULT_MB * 2**20)
    try:
        mb = float(raw)
    except ValueError:
        raise InvalidArgumentError(f"{ENV}={raw!r} is not a number of megabytes (0 turns the cache off)") from None
    if mb < 0 or mb != mb:
        raise InvalidArgumentError(f"{ENV}={raw!r} must be >= 0 megabytes (0 turns the cache off)")
    return int(mb * 2**20)


_CACHES: weakref.WeakValueDictionary[str, TokenCache] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_max_bytes: int | None = None  # None: read the environment on first use


def token_cache_for(tokenizer: Tokenizer) -> TokenCache:
    """The process-wide cache of this tokenizer (made on first use; alive while a scorer or engine holds it)."""
    global _max_bytes
    identity = tokenizer_identity(tokenizer)
    with _LOCK:
        cache = _CACHES.get(identity)
        if cache is None:
            if _max_bytes is None:
                _max_bytes = _size_from_env()
            cache = TokenCache(identity, _max_bytes)
            _CACHES[identity] = cache
        return cache


def set_token_cache_mb(mb: float) -> None:
    """Bound every token cache, present and future, to ``mb`` megabytes (0: off); overrides the environment."""
    global _max_bytes
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not mb >= 0:
        raise InvalidArgumentError(f"the token cache size must be a number of megabytes >= 0, got {mb!r}")
    with _LOCK:
        _max_bytes = int(mb * 2**20)
        caches = list(_CACHES.values())
    for cache in caches:
        cache.resize(_max_bytes)
