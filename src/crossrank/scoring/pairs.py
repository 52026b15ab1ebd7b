"""Pair tokenizing: turn (query, documents) into model-ready token pairs, with truncation that never eats the query.

The tokenizer is configured once (no truncation, no padding) and then only read, which is what
makes one tokenizer safe to share between threads: the "Already borrowed" errors other rerankers
hit come from re-configuring truncation/padding on every call. Pairs are assembled from separately
encoded query and document ids using the model's own pair template (``[CLS] q [SEP] d [SEP]`` for
BERT, ``<s> q </s></s> d </s>`` for RoBERTa), so truncation and sliding windows are exact and
backend-independent. A document's ids do not depend on the query, so they come from the shared
token cache (:mod:`.token_cache`) when it has them; a tokenizer whose pair layout the template
cannot rebuild (checked on probe pairs) has every pair built by its own post-processor instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from crossrank.errors import BackendUnavailableError, InvalidArgumentError, ModelLoadError
from crossrank.scoring.token_cache import TokenCache


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
            try:
                from transformers import AutoTokenizer
            except ImportError as exc:  # the light install reads tokenizer.json only
                raise BackendUnavailableError(
                    f"{path} has no tokenizer.json; converting its slow tokenizer needs transformers: "
                    "pip install 'crossrank[torch]' (a folder made by `crossrank export` always has tokenizer.json)"
                ) from exc

            hf = AutoTokenizer.from_pretrained(str(path), use_fast=True)
            backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
            if backend is None:
                raise ModelLoadError(f"{path} has no fast tokenizer (tokenizer.json); crossrank needs one")
            tok = Tokenizer.from_str(backend.to_str())
    except (ModelLoadError, BackendUnavailableError):
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
    token_cache_hits: int = 0  # documents whose ids came from the token cache
    token_cache_misses: int = 0  # documents looked up there and tokenized


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
    max_tokens: int | None = None,
    side: str = "right",
) -> None:
    """Append each document's windows (``cap=1``: its start only, i.e. truncation) to ``out``.

    ``room`` is the document tokens one input holds, ``row`` builds an input's ids and type ids
    around a piece of document; what each document was cut to is recorded (windows, truncation).
    ``max_tokens`` first cuts every document to that many tokens; ``side="left"`` makes every cut
    keep the document's end instead of its start (truncation keeps the last ``room`` tokens, and
    windows past ``cap`` are dropped from the start).
    """
    stride = min(overlap, room // 2)
    left = side == "left"
    for slot, full in enumerate(docs):
        d = full
        if max_tokens is not None and len(d) > max_tokens:
            d = d[len(d) - max_tokens :] if left else d[:max_tokens]
        n = len(d)
        starts = window_starts(n, room, stride, cap)
        if left and n > room:
            starts = sorted(n - room - s for s in starts)
        for s in starts:
            ids, types = row(list(d[s : s + room]))
            out.ids.append(ids)
            out.types.append(types)
            out.owner.append(slot)
        out.doc_tokens.append(len(full))
        out.windows.append(len(starts))
        dropped = n > room and (starts[0] > 0 or starts[-1] + room < n)
        out.truncated.append(dropped or n < len(full))


class PairEncoder:
    """Encodes query-document pairs for one model and one ``max_length``."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, *, cache: TokenCache | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.template = PairTemplate.from_tokenizer(tokenizer)
        # Whether pairs can be assembled from ids with the template; if not, the tokenizer builds every pair.
        self.assembles = template_assembles(tokenizer, self.template)
        n_special = self.template.n_special if self.assembles else tokenizer.num_special_tokens_to_add(True)
        self.budget = max_length - n_special
        # The query keeps at most 3/4 of the room, so a document always gets a real share.
        self.max_query_tokens = max(1, (self.budget * 3) // 4)
        self.pad_id = pad_token_id(tokenizer)
        self.cache = cache

    def use_cache(self, cache: TokenCache | None) -> None:
        """Take documents' ids from ``cache`` (shared by every encoder of this tokenizer); None: tokenize each call."""
        self.cache = cache

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def doc_ids(self, docs: Sequence[str]) -> tuple[list[list[int]], int, int]:
        """Each document's ids (no special tokens), with the token cache's hits and misses for them."""
        if not docs:
            return [], 0, 0
        cache = self.cache
        if cache is None or not cache.enabled:
            return self._tokenize(list(docs)), 0, 0
        arrays, hits = cache.lookup(docs, self._tokenize)
        return [a.tolist() for a in arrays], hits, len(docs) - hits

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.doc_ids(texts)[0]]

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
        max_document_tokens: int | None = None,
        truncation_side: str = "right",
        instruction: str | None = None,
    ) -> EncodedPairs:
        if instruction is not None:
            raise InvalidArgumentError(
                "instruction applies to rerankers whose prompt has an instruction slot; a cross-encoder reads the "
                "plain (query, document) pair"
            )
        cap = max_windows if windows else 1
        if not self.assembles:
            return self._encode_with_tokenizer(query, docs, window_overlap, cap, max_document_tokens, truncation_side)
        t = self.template
        q, q_cut = self.encode_query(query)
        room = self.budget - len(q)
        head = [*t.prefix, *q, *t.middle]
        head_types = [*t.prefix_types, *([t.type_a] * len(q)), *t.middle_types]
        tail, tail_types = list(t.suffix), list(t.suffix_types)
        doc_ids, hits, misses = self.doc_ids(docs)
        out = EncodedPairs(query_truncated=q_cut, token_cache_hits=hits, token_cache_misses=misses)
        type_b = t.type_b

        def row(piece: list[int]) -> tuple[list[int], list[int]]:
            return head + piece + tail, head_types + [type_b] * len(piece) + tail_types

        add_windows(
            out,
            doc_ids,
            room=room,
            overlap=window_overlap,
            cap=cap,
            row=row,
            max_tokens=max_document_tokens,
            side=truncation_side,
        )
        return out

    def _encode_with_tokenizer(
        self, query: str, docs: Sequence[str], overlap: int, cap: int, max_tokens: int | None, side: str
    ) -> EncodedPairs:
        """:meth:`encode` for layouts the template cannot rebuild: the tokenizer's post-processor makes every pair.

        The same cuts (query cap, truncation, windows, ``max_tokens``, ``side``) are chosen by
        :func:`add_windows` on token positions; each piece of the document's own encoding is then
        joined to the query by :meth:`tokenizers.Tokenizer.post_process`, as ``tokenizer(q, d)``
        joins them. Slower (one post-process per input) and never cached: correctness first.
        """
        qe = self.tokenizer.encode(query, add_special_tokens=False)
        q_cut = len(qe.ids) > self.max_query_tokens
        if q_cut:
            self.encode_query(query)  # the same warning as the template path
            qe.truncate(self.max_query_tokens)
        room = self.budget - len(qe.ids)
        out = EncodedPairs(query_truncated=q_cut)
        encs = self.tokenizer.encode_batch(list(docs), add_special_tokens=False) if docs else []
        for slot, enc in enumerate(encs):

            def row(positions: list[int], enc: Encoding = enc) -> tuple[list[int], list[int]]:
                piece = _encoding_slice(enc, positions[0], positions[-1] + 1) if positions else enc
                pair = self.tokenizer.post_process(qe, piece, add_special_tokens=True)
                return list(pair.ids), list(pair.type_ids)

            one = EncodedPairs()
            n = len(enc.ids)
            add_windows(one, [range(n)], room=room, overlap=overlap, cap=cap, row=row, max_tokens=max_tokens, side=side)
            out.ids.extend(one.ids)
            out.types.extend(one.types)
            out.owner.extend([slot] * len(one.ids))
            out.doc_tokens.extend(one.doc_tokens)
            out.windows.extend(one.windows)
            out.truncated.extend(one.truncated)
        return out

    def pad(self, ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Right-pad a batch of this encoder's pairs (see :func:`pad_batch`)."""
        return pad_batch(ids, types, pad_id=self.pad_id)


# Probe pairs for :func:`template_assembles`: one-token and multi-token texts, an empty document, non-ASCII.
_PROBES = (
    ("a", "b"),
    ("what does aspirin do?", "Aspirin lowers the risk of a heart attack."),
    ("x", ""),
    ("naïve café", "日本語 text 🙂"),
)


def template_assembles(tokenizer: Tokenizer, template: PairTemplate) -> bool:
    """Whether query ids + the template + document ids give exactly the tokenizer's own pair encoding.

    Checked on probe pairs (ids and type ids): a post-processor whose pair layout is not
    ``prefix A middle B suffix`` (say, the document first) fails it, and its encoder then lets the
    tokenizer build every pair instead.
    """
    t = template
    for q, d in _PROBES:
        ref = tokenizer.encode(q, d, add_special_tokens=True)
        a = tokenizer.encode(q, add_special_tokens=False).ids
        b = tokenizer.encode(d, add_special_tokens=False).ids
        ids = [*t.prefix, *a, *t.middle, *b, *t.suffix]
        types = [*t.prefix_types, *[t.type_a] * len(a), *t.middle_types, *[t.type_b] * len(b), *t.suffix_types]
        if ids != list(ref.ids) or types != list(ref.type_ids):
            return False
    return True


def _encoding_slice(enc: Encoding, start: int, stop: int) -> Encoding:
    """A copy of ``enc`` holding tokens ``start:stop`` only (``enc`` itself is left as it was)."""
    piece = Encoding.merge([enc], growing_offsets=False)
    piece.truncate(len(piece.ids) - start, direction="left")
    piece.truncate(stop - start, direction="right")
    return piece


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The tokenizer's padding id (``[PAD]``, ``<pad>`` ...); 0 when it names none (masked anyway)."""
    pads = (tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>", "<PAD>", "<|endoftext|>"))
    return next((p for p in pads if p is not None), 0)


def pad_batch(
    ids: Sequence[Sequence[int]],
    types: Sequence[Sequence[int]],
    *,
    pad_id: int,
    left: bool = False,
    width: int | None = None,
    rows: int | None = None,
) -> dict[str, np.ndarray]:
    """Pad a batch to its longest member: right for encoders, left for causal LMs (last token = answer slot).

    Callers sort by length, so padding stays small. Returns int64 ``input_ids``, ``attention_mask``
    and ``token_type_ids``; each backend feeds only the inputs its model declares. ``width`` /
    ``rows``: pad further, to a shape the backend reuses (a length bucket); extra rows are padding
    whose first position is unmasked (an all-masked row can give NaN), and their scores are dropped.
    """
    n = len(ids)
    width = max(max(len(x) for x in ids), width or 0)
    total = max(n, rows or 0)
    input_ids = np.full((total, width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((total, width), dtype=np.int64)
    mask = np.zeros((total, width), dtype=np.int64)
    mask[n:, -1 if left else 0] = 1
    for i, (row, trow) in enumerate(zip(ids, types)):
        k = len(row)
        cols = slice(width - k, width) if left else slice(0, k)
        input_ids[i, cols] = row
        token_type_ids[i, cols] = trow
        mask[i, cols] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}
