"""MaxSim, vectorised over all candidates, and the compact forms token vectors are kept in.

MaxSim (Khattab & Zaharia 2020, ColBERT) scores a document against a query as the sum, over the
query's token vectors, of each one's largest dot product with any of the document's token vectors.
With unit-length vectors (every ColBERT-style model normalizes them) a dot product is a cosine.

:func:`maxsim` takes one query and many documents of different lengths, stacks the token vectors
of a chunk of documents into one ``(tokens, dim)`` float32 matrix (no padding, no mask), scores all
of them against the query with one matrix product, and takes each document's per-query-token
maximum over its own rows with one segmented reduction (``np.maximum.reduceat``). Vectors
are kept as float16 (:func:`to_fp16`) or int8 with one scale per token (:func:`quantize_int8`) and
widened to float32 only inside a chunk: storage is half or a quarter of float32, arithmetic is
float32 (the product runs in torch, on torch's CPU threads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossrank.errors import InvalidArgumentError

#: Document tokens per matrix product: about 32 MB of float32 vectors at 128 dims.
CHUNK_TOKENS = 65_536
PRECISIONS: tuple[str, ...] = ("fp16", "int8", "fp32")


@dataclass(frozen=True)
class Packed:
    """One document's token vectors in storage form: ``values`` (tokens, dim) as float16, float32 or
    int8, and for int8 the per-token ``scales`` (float32) that turn them back into floats."""

    values: np.ndarray
    scales: np.ndarray | None = None

    @property
    def tokens(self) -> int:
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + (self.scales.nbytes if self.scales is not None else 0))

    def floats(self) -> np.ndarray:
        """The vectors as float32 (tokens, dim)."""
        if self.scales is None:
            return self.values.astype(np.float32, copy=False)
        return self.values.astype(np.float32) * self.scales[:, None]


def to_fp16(vectors: np.ndarray) -> Packed:
    """Float16 storage form of (tokens, dim) vectors."""
    return Packed(np.ascontiguousarray(vectors, dtype=np.float16))


def quantize_int8(vectors: np.ndarray) -> Packed:
    """Symmetric int8 per token: ``scale = max|v| / 127``, values ``round(v / scale)``.

    For unit vectors the rounding error of a dot product is at most ``dim * scale / 2`` per factor;
    in practice about 1e-3 relative, far below the gaps between candidates' MaxSim scores.
    """
    v = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(v).max(axis=1) if v.size else np.zeros(len(v), dtype=np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(v / scales[:, None]), -127, 127).astype(np.int8)
    return Packed(np.ascontiguousarray(q), scales)


def pack(vectors: np.ndarray, precision: str) -> Packed:
    """``vectors`` in the storage form ``precision`` names: ``fp16``, ``int8`` or ``fp32``."""
    if precision == "fp16":
        return to_fp16(vectors)
    if precision == "int8":
        return quantize_int8(vectors)
    if precision == "fp32":
        return Packed(np.ascontiguousarray(vectors, dtype=np.float32))
    raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _as_packed(doc: Packed | np.ndarray) -> Packed:
    return doc if isinstance(doc, Packed) else Packed(np.asarray(doc))


def maxsim(
    query: np.ndarray,
    documents: Sequence[Packed | np.ndarray] | np.ndarray,
    mask: np.ndarray | None = None,
    *,
    mean: bool = False,
    chunk_tokens: int = CHUNK_TOKENS,
) -> np.ndarray:
    """MaxSim of one query against every document: a float64 array, one score per document.

    Args:
        query: the query's token vectors, (query tokens, dim).
        documents: each document's token vectors, (tokens_i, dim) arrays or :class:`Packed`
            (any lengths), or one padded (documents, tokens, dim) array with ``mask``.
        mask: with a padded array, (documents, tokens) booleans, True for real tokens.
        mean: divide by the query's token count (``meanmaxsim``; same order, scores in [-1, 1]).
        chunk_tokens: document tokens scored per matrix product (bounds memory).

    A document with no token vectors scores 0.0.
    """
    q = np.ascontiguousarray(query, dtype=np.float32)
    if q.ndim != 2:
        raise InvalidArgumentError(f"query vectors must be (tokens, dim), got shape {q.shape}")
    if isinstance(documents, np.ndarray) and documents.ndim == 3:
        if mask is None:
            mask = np.ones(documents.shape[:2], dtype=bool)
        docs: list[Packed] = [Packed(d[m]) for d, m in zip(documents, np.asarray(mask, dtype=bool))]
    else:
        docs = [_as_packed(d) for d in documents]
    n, dim = len(docs), q.shape[1]
    out = np.zeros(n, dtype=np.float64)
    if n == 0 or q.shape[0] == 0:
        return out
    for i, d in enumerate(docs):
        if d.values.ndim != 2 or (d.tokens and d.values.shape[1] != dim):
            raise InvalidArgumentError(
                f"document {i}'s vectors have shape {d.values.shape}, the query's dim is {dim}: "
                "vectors from different models do not mix"
            )
    import torch

    qt = torch.from_numpy(q).T
    start = 0
    while start < n:
        # A chunk of consecutive documents, about chunk_tokens tokens in all (at least one document).
        stop, tokens = start, 0
        while stop < n and (stop == start or tokens + docs[stop].tokens <= chunk_tokens):
            tokens += docs[stop].tokens
            stop += 1
        part = [i for i in range(start, stop) if docs[i].tokens]
        if part:
            # All the chunk's token vectors in one (tokens, dim) matrix: one product, no padding.
            flat = torch.from_numpy(np.concatenate([docs[i].values for i in part]))
            with torch.no_grad():  # torch widens float16/int8 with SIMD; numpy's float16 cast is several times slower
                sims = (flat.to(torch.float32) @ qt).numpy()  # (tokens, query tokens)
            if any(docs[i].scales is not None for i in part):
                scales = np.concatenate(
                    [
                        docs[i].scales if docs[i].scales is not None else np.ones(docs[i].tokens, np.float32)
                        for i in part
                    ]
                )
                sims *= scales[:, None]  # int8: scale each document token's similarities back
            bounds = np.cumsum([0] + [docs[i].tokens for i in part[:-1]])
            best = np.maximum.reduceat(sims, bounds, axis=0)  # (documents, query tokens): max over each one's tokens
            out[part] = best.sum(axis=1, dtype=np.float64)
        start = stop
    if mean:
        out /= q.shape[0]
    return out
