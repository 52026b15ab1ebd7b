"""Prompt encoding for causal-LM rerankers: shared head once per query, the document, a fixed suffix.

The head (system text, instruction, query) and the suffix (where the model answers) are tokenized
once per query; only the document is truncated or cut into windows, so the answer slot is always
the last token. Inputs are left-padded by the engine, as causal models need.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from tokenizers import Tokenizer

from crossrank.errors import InvalidArgumentError, ModelLoadError
from crossrank.prompts import PromptTemplate
from crossrank.scoring.pairs import EncodedPairs, add_windows


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of an answer token that must be a single token of the vocabulary."""
    tid = tokenizer.token_to_id(token)
    if tid is None:
        ids = tokenizer.encode(token, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ModelLoadError(f"the tokenizer has no single token for the answer {token!r}; wrong template?")
        tid = ids[0]
    return int(tid)


class PromptEncoder:
    """Encodes (query, documents) into causal reranker prompts for one model and one ``max_length``."""

    def __init__(
        self, tokenizer: Tokenizer, max_length: int, template: PromptTemplate, instruction: str | None
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.template = template
        self.instruction = instruction
        self.suffix = self._ids(template.suffix)
        bos = None
        if template.bos:
            bos = next(
                (tokenizer.token_to_id(t) for t in ("<bos>", "<s>") if tokenizer.token_to_id(t) is not None), None
            )
            if bos is None:
                raise ModelLoadError(f"the {template.name} template starts with a BOS token the tokenizer lacks")
        self.bos = [] if bos is None else [bos]
        self.budget = max_length - len(self.suffix) - len(self.bos)
        if self.budget < 8:
            raise InvalidArgumentError(
                f"max_length={max_length} leaves no room for a document after the {template.name} prompt"
            )
        self.max_head_tokens = (self.budget * 3) // 4

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def head(self, query: str) -> tuple[list[int], bool]:
        """The shared head for ``query``; the query is cut (with a warning) if the head would crowd out documents."""
        ids = self._ids(self.template.format_head(query, self.instruction))
        if len(ids) <= self.max_head_tokens:
            return self.bos + ids, False
        q = self._ids(query)
        keep = max(1, len(q) - (len(ids) - self.max_head_tokens))
        warnings.warn(
            f"query has {len(q)} tokens; kept the first {keep} so that documents still fit in "
            f"max_length={self.max_length} after the {self.template.name} prompt",
            stacklevel=5,
        )
        cut = self.tokenizer.decode(q[:keep])
        return self.bos + self._ids(self.template.format_head(cut, self.instruction))[: self.max_head_tokens], True

    def encode(
        self, query: str, docs: Sequence[str], *, windows: bool = False, window_overlap: int = 64, max_windows: int = 16
    ) -> EncodedPairs:
        head, q_cut = self.head(query)
        room = self.budget - (len(head) - len(self.bos))
        out = EncodedPairs(query_truncated=q_cut)
        segments = [self.template.format_document(d) for d in docs]
        encs = self.tokenizer.encode_batch(segments, add_special_tokens=False) if segments else []
        suffix = self.suffix

        def row(piece: list[int]) -> tuple[list[int], list[int]]:
            ids = [*head, *piece, *suffix]
            return ids, [0] * len(ids)

        add_windows(
            out, [e.ids for e in encs], room=room, overlap=window_overlap, cap=max_windows if windows else 1, row=row
        )
        return out
