"""Model families: how a kind of model turns (query, document) into inputs, and logits into a score.

Each family supplies two things to the local scorer: a pair encoder (the prompt or pair template,
truncation, windows, which side to pad) and a head rule (model output -> one raw score per pair).
Adding a kind of reranker — e.g. a causal LM scored by the logits of "yes" and "no" — means adding
a family here; the engine, the backends and the Reranker stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from crossrank.errors import UnsupportedModelError
from crossrank.model_files import ModelInfo
from crossrank.prompts import TEMPLATES, PromptTemplate
from crossrank.scoring.pairs import EncodedPairs, PairEncoder
from crossrank.scoring.prompt_pairs import PromptEncoder, token_id


class Encoder(Protocol):
    """Tokenizes one query against many documents for one model and one ``max_length``."""

    max_length: int

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without special tokens."""
        ...

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
        """Token ids (and type ids) per model input, with the document each input belongs to.

        ``max_document_tokens`` / ``truncation_side`` / ``instruction``: see
        :class:`~crossrank.scoring.base.ScoreSettings`; an encoder that cannot take an instruction raises.
        """
        ...


class ModelFamily(Protocol):
    """What the local scorer needs to know about one kind of model."""

    kind: str
    left_padding: bool
    score_token_ids: tuple[int, ...]  # causal LMs: the vocabulary columns the backend returns; else ()

    def encoder(self, tokenizer: Tokenizer, max_length: int) -> Encoder:
        """A pair encoder for this model at ``max_length`` tokens."""
        ...

    def head(self, logits: np.ndarray) -> np.ndarray:
        """One raw score per input row, as float32."""
        ...


class SequenceClassification:
    """``*ForSequenceClassification`` cross-encoders: ``[CLS] q [SEP] d [SEP]``, right padding.

    Raw score: the logit of a 1-logit head, or positive-minus-negative logit (the log-odds) of a
    2-logit head, so ``sigmoid`` gives the model's probability of relevance either way.
    """

    kind = "cross-encoder"
    left_padding = False
    score_token_ids: tuple[int, ...] = ()

    def __init__(self, info: ModelInfo) -> None:
        self.positive_index = info.positive_index

    def encoder(self, tokenizer: Tokenizer, max_length: int) -> Encoder:
        return PairEncoder(tokenizer, max_length)

    def head(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 1:
            return logits
        if logits.shape[1] == 1:
            return logits[:, 0]
        pos = self.positive_index
        return logits[:, pos] - logits[:, 1 - pos]


class CausalLM:
    """Causal-LM yes/no rerankers (Qwen3-Reranker, mxbai-rerank-v2, bge-reranker-v2-gemma).

    The backend returns the last position's logits of the answer tokens only (``score_token_ids``:
    yes, then no); the raw score is ``logit(yes) - logit(no)``, or ``logit(yes)`` for one-token
    families. Prompts are left-padded so the answer slot is every row's last token.
    ``instruction`` / ``prompt``: the template's options; one the family has no slot for raises.
    """

    kind = "causal-lm"
    left_padding = True

    def __init__(
        self, info: ModelInfo, tokenizer: Tokenizer, instruction: str | None = None, prompt: str | None = None
    ) -> None:
        if info.template is None:  # pragma: no cover - inspect_model always sets it for causal models
            raise UnsupportedModelError(f"{info.name}: a causal reranker needs a prompt template")
        self.template: PromptTemplate = TEMPLATES[info.template]
        self.template.check_options(instruction=instruction, prompt=prompt)
        self.instruction = instruction
        self.prompt = prompt
        answers = [self.template.yes] + ([self.template.no] if self.template.no is not None else [])
        self.score_token_ids = tuple(token_id(tokenizer, t) for t in answers)

    def encoder(self, tokenizer: Tokenizer, max_length: int) -> Encoder:
        return PromptEncoder(tokenizer, max_length, self.template, self.instruction, self.prompt)

    def head(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float32)
        return logits[:, 0] - logits[:, 1] if logits.shape[1] == 2 else logits[:, 0]


def family_for(
    info: ModelInfo, tokenizer: Tokenizer, *, instruction: str | None = None, prompt: str | None = None
) -> ModelFamily:
    """The family that scores ``info``'s kind of model."""
    if info.kind == "cross-encoder":
        return SequenceClassification(info)
    if info.kind == "causal-lm":
        return CausalLM(info, tokenizer, instruction, prompt)
    raise UnsupportedModelError(f"{info.name}: no scoring rule for model kind {info.kind!r}")
