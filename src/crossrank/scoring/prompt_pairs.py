"""Prompt encoding for causal-LM rerankers: each piece tokenized as the family's authors tokenize it.

A template (:mod:`crossrank.prompts`) lists the pieces its authors tokenize one at a time; their
ids are concatenated, never re-tokenized together, so token boundaries (``?`` + ``\\n`` against
``?\\n``) are the authors'. The fixed pieces (prefix, separator, tail) and the query piece are
tokenized once per query; only the document is truncated or cut into windows, so the answer slot
is always the last token. Inputs are left-padded by the engine, as causal models need.

Lengths: ``max_length`` counts every token of the prompt. The query piece keeps at most 3/4 of
what the prefix and tail leave (mxbai-rerank-v2's and FlagEmbedding's ``max_length * 3 // 4``,
their ``max_length`` being the tokens left after those pieces); the document gets the rest.
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
        self,
        tokenizer: Tokenizer,
        max_length: int,
        template: PromptTemplate,
        instruction: str | None,
        prompt: str | None = None,
    ) -> None:
        template.check_options(instruction=instruction, prompt=prompt)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.template = template
        self.instruction = instruction
        self.prompt = prompt
        bos = None
        if template.bos:
            bos = next(
                (tokenizer.token_to_id(t) for t in ("<bos>", "<s>") if tokenizer.token_to_id(t) is not None), None
            )
            if bos is None:
                raise ModelLoadError(f"the {template.name} template starts with a BOS token the tokenizer lacks")
        self.bos = [] if bos is None else [bos]
        self.prefix = self._ids(template.prefix)
        self.separator = self._ids(template.separator)
        self.tail = [i for piece in template.format_tail(prompt) for i in self._ids(piece)]
        # What the query and the document share: max_length less the fixed pieces around them.
        self.budget = max_length - len(self.bos) - len(self.prefix) - len(self.separator) - len(self.tail)
        if self.budget < 8:
            raise InvalidArgumentError(
                f"max_length={max_length} leaves no room for a document after the {template.name} prompt"
            )
        # The authors' query cap: 3/4 of max_length less prefix and tail (bos and separator not counted).
        self.max_query_tokens = ((max_length - len(self.prefix) - len(self.tail)) * 3) // 4

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else []

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def query_text(self, query: str, instruction: str | None = None) -> tuple[str, list[int], bool]:
        """The query piece's text and ids; cut (with a warning) to :attr:`max_query_tokens`.

        Pieces tokenized on their own are cut by ids, as the authors truncate them. A joined
        template (Qwen3-Reranker) keeps its ``<Document>:`` marker: the query text is shortened and
        the piece formatted again (its authors cut the whole string from the right instead, which
        drops the document first: the one place crossrank departs from them, for queries longer
        than 3/4 of ``max_length``). ``instruction``: this call's, else the encoder's.
        """
        t = self.template
        instruction = self.instruction if instruction is None else instruction
        text = t.format_query(query, instruction)
        ids = self._ids(text)
        if len(ids) <= self.max_query_tokens:
            return text, ids, False
        if t.joined:  # shorten the query text until the formatted piece fits (re-tokenizing may add a token)
            q = self._ids(query)
            keep, cut = len(q), ids
            while len(cut) > self.max_query_tokens and keep > 0:
                keep = max(0, keep - (len(cut) - self.max_query_tokens))
                text = t.format_query(self.tokenizer.decode(q[:keep]), instruction)
                cut = self._ids(text)
            cut = cut[: self.max_query_tokens]
        else:
            cut = ids[: self.max_query_tokens]
        warnings.warn(
            f"the query has {len(ids)} tokens with its {t.name} prompt piece; kept the first {len(cut)} so "
            f"that documents still fit in max_length={self.max_length}",
            stacklevel=5,
        )
        return text, cut, True

    def split_documents(
        self, query_text: str, query_ids: list[int], docs: Sequence[str]
    ) -> list[tuple[list[int], list[int]]]:
        """Per document: (the ids before the document piece, the document piece's ids)."""
        t = self.template
        segments = [t.format_document(d) for d in docs]
        if not segments:
            return []
        if not t.joined:
            encs = self.tokenizer.encode_batch(segments, add_special_tokens=False)
            head = [*query_ids, *self.separator]
            return [(head, list(e.ids)) for e in encs]
        # Tokenized whole, as the authors do; the document's tokens are those from its first character on.
        start = len(query_text) + len(t.separator)
        encs = self.tokenizer.encode_batch([query_text + t.separator + s for s in segments], add_special_tokens=False)
        out = []
        for e in encs:
            cut = next((i for i, (a, _) in enumerate(e.offsets) if a >= start), len(e.ids))
            out.append((list(e.ids[: min(cut, self.max_query_tokens)]), list(e.ids[cut:])))
        return out

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
        """Prompts for ``query`` against ``docs`` (``instruction``: this call's, if the family takes one)."""
        self.template.check_options(instruction=instruction)
        text, q_ids, q_cut = self.query_text(query, instruction)
        out = EncodedPairs(query_truncated=q_cut)
        lead = [*self.bos, *self.prefix]
        tail = self.tail
        cap = max_windows if windows else 1
        for slot, (head, doc) in enumerate(self.split_documents(text, q_ids, docs)):
            one = EncodedPairs()
            start = [*lead, *head]

            def row(piece: list[int], start: list[int] = start) -> tuple[list[int], list[int]]:
                ids = [*start, *piece, *tail]
                return ids, [0] * len(ids)

            room = max(1, self.max_length - len(start) - len(tail))
            add_windows(
                one,
                [doc],
                room=room,
                overlap=window_overlap,
                cap=cap,
                row=row,
                max_tokens=max_document_tokens,
                side=truncation_side,
            )
            out.ids.extend(one.ids)
            out.types.extend(one.types)
            out.owner.extend([slot] * len(one.ids))
            out.doc_tokens.extend(one.doc_tokens)
            out.windows.extend(one.windows)
            out.truncated.extend(one.truncated)
        return out
