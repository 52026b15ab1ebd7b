"""Pair tokenizing: turn (query, documents) into model-ready token pairs, with truncation that never eats the query.

The tokenizer is configured once (no truncation, no padding) and then only read, which is what
makes one tokenizer safe to share between threads: the "Already borrowed" errors other rerankers
hit come from re-configuring truncation/padding on every call. Pairs are assembled from separately
encoded query and document ids using the model's own pair template (``[CLS] q [SEP] d [SEP]`` for
BERT, ``<s> q </s></s> d </s>`` for RoBERTa), so truncation and sliding windows are exact and
backend-independent.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from crossrank.errors import ModelLoadError


def load_tokenizer(path: Path) -> Tokenizer:
    """Fast tokenizer from tokenizer.json, converting a slow one through transformers if needed."""
    tj = path / "tokenizer.json"
    vocab_files = ("vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
    if not tj.is_file() and not any((path / f).is_file() for f in vocab_files):
        raise ModelLoadError(
            f"{path} has no tokenizer (tokenizer.json or a vocabulary file); the download is incomplete: "
            "re-download the model"
        )
    try:
        if tj.is_file():
            tok = Tokenizer.from_file(str(tj))
        else:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(path), use_fast=True)
            backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
            if backend is None:
                raise ModelLoadError(f"{path} has no fast tokenizer (tokenizer.json); crossrank needs one")
            tok = Tokenizer.from_str(backend.to_str())
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"tokenizer in {path} could not be loaded ({exc}); re-download the model") from exc
    if tok.get_vocab_size() < 50:
        raise ModelLoadError(f"the tokenizer in {path} has only {tok.get_vocab_size()} tokens; re-download the model")
    tok.no_truncation()
    tok.no_padding()
    return tok


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens and type ids around query (A) and document (B) in the model's pair layout."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    type_a: int
    type_b: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> PairTemplate:
        pair = tok.encode("a", "b", add_special_tokens=True)
        seq = pair.sequence_ids
        ids, types = pair.ids, pair.type_ids
        a_pos = [i for i, s in enumerate(seq) if s == 0]
        b_pos = [i for i, s in enumerate(seq) if s == 1]
        if not a_pos or not b_pos:
            raise ModelLoadError("the tokenizer's post-processor has no pair template; it cannot encode pairs")
        a0, a1, b0, b1 = a_pos[0], a_pos[-1] + 1, b_pos[0], b_pos[-1] + 1
        return cls(
            prefix=tuple(ids[:a0]),
            middle=tuple(ids[a1:b0]),
            suffix=tuple(ids[b1:]),
            prefix_types=tuple(types[:a0]),
            middle_types=tuple(types[a1:b0]),
            suffix_types=tuple(types[b1:]),
            type_a=types[a0],
            type_b=types[b0],
        )


@dataclass
class EncodedPairs:
    """Model inputs for one query against a list of documents (one or more windows each)."""

    ids: list[list[int]] = field(default_factory=list)
    types: list[list[int]] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # document slot of each item
    doc_tokens: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    query_truncated: bool = False


def window_starts(n: int, size: int, stride: int, cap: int) -> list[int]:
    """Start offsets of at most ``cap`` windows of ``size`` tokens, ``stride`` shared, the last ending at ``n``."""
    if n <= size:
        return [0]
    step = max(1, size - stride)
    starts = list(range(0, n - size, step))[:cap]
    last = n - size
    if len(starts) < cap and (not starts or starts[-1] != last):
        starts.append(last)  # the final window ends exactly at the document's end
    return starts[:cap]


def add_windows(
    out: EncodedPairs,
    docs: Sequence[Sequence[int]],
    *,
    room: int,
    overlap: int,
    cap: int,
    row: Callable[[list[int]], tuple[list[int], list[int]]],
) -> None:
    """Append each document's windows (``cap=1``: its start only, i.e. truncation) to ``out``.

    ``room`` is the document tokens one input holds, ``row`` builds an input's ids and type ids
    around a piece of document; what each document was cut to is recorded (windows, truncation).
    """
    stride = min(overlap, room // 2)
    for slot, d in enumerate(docs):
        n = len(d)
        starts = window_starts(n, room, stride, cap)
        for s in starts:
            ids, types = row(list(d[s : s + room]))
            out.ids.append(ids)
            out.types.append(types)
            out.owner.append(slot)
        out.doc_tokens.append(n)
        out.windows.append(len(starts))
        covered = starts[-1] + room if n > room else n
        out.truncated.append(covered < n)


class PairEncoder:
    """Encodes query-document pairs for one model and one ``max_length``."""

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.template = PairTemplate.from_tokenizer(tokenizer)
        self.budget = max_length - self.template.n_special
        # The query keeps at most 3/4 of the room, so a document always gets a real share.
        self.max_query_tokens = max(1, (self.budget * 3) // 4)
        self.pad_id = pad_token_id(tokenizer)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_query(self, query: str) -> tuple[list[int], bool]:
        q = self.tokenizer.encode(query, add_special_tokens=False).ids
        if len(q) > self.max_query_tokens:
            warnings.warn(
                f"query has {len(q)} tokens; kept the first {self.max_query_tokens} so that documents "
                f"still fit in max_length={self.max_length}",
                stacklevel=4,
            )
            return q[: self.max_query_tokens], True
        return q, False

    def encode(
        self,
        query: str,
        docs: Sequence[str],
        *,
        windows: bool = False,
        window_overlap: int = 64,
        max_windows: int = 16,
    ) -> EncodedPairs:
        t = self.template
        q, q_cut = self.encode_query(query)
        room = self.budget - len(q)
        head = [*t.prefix, *q, *t.middle]
        head_types = [*t.prefix_types, *([t.type_a] * len(q)), *t.middle_types]
        tail, tail_types = list(t.suffix), list(t.suffix_types)
        out = EncodedPairs(query_truncated=q_cut)
        encs: list[Encoding] = self.tokenizer.encode_batch(list(docs), add_special_tokens=False) if docs else []
        type_b = t.type_b

        def row(piece: list[int]) -> tuple[list[int], list[int]]:
            return head + piece + tail, head_types + [type_b] * len(piece) + tail_types

        add_windows(
            out, [e.ids for e in encs], room=room, overlap=window_overlap, cap=max_windows if windows else 1, row=row
        )
        return out

    def pad(self, ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Right-pad a batch of this encoder's pairs (see :func:`pad_batch`)."""
        return pad_batch(ids, types, pad_id=self.pad_id)


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The tokenizer's padding id (``[PAD]``, ``<pad>`` ...); 0 when it names none (masked anyway)."""
    pads = (tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>", "<PAD>", "<|endoftext|>"))
    return next((p for p in pads if p is not None), 0)


def pad_batch(
    ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]], *, pad_id: int, left: bool = False
) -> dict[str, np.ndarray]:
    """Pad a batch to its longest member: right for encoders, left for causal LMs (last token = answer slot).

    Callers sort by length, so padding stays small. Returns int64 ``input_ids``, ``attention_mask``
    and ``token_type_ids``; each backend feeds only the inputs its model declares.
    """
    width = max(len(x) for x in ids)
    n = len(ids)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, (row, trow) in enumerate(zip(ids, types)):
        k = len(row)
        cols = slice(width - k, width) if left else slice(0, k)
        input_ids[i, cols] = row
        token_type_ids[i, cols] = trow
        mask[i, cols] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}
