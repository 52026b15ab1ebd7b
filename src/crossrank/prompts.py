"""Prompt templates of causal-LM rerankers, declared in one place per family.

A causal-LM reranker reads one prompt per (query, document) and answers with a token: the raw
score is ``logit(yes) - logit(no)`` at the last position (sentence-transformers' ``LogitScore``),
so ``normalize="sigmoid"`` gives P(yes), the family's own probability; a family scored by one
token's logit alone (bge-reranker-v2-gemma) has ``no=None``.

The prompt is split into the part every candidate shares (``head``: system text, instruction,
query) and the part that varies (``document``), then a fixed ``suffix``. Only the document is ever
truncated or windowed, so the instruction, the query and the answer slot are never cut off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """One causal reranker family's prompt and answer tokens.

    ``head`` is formatted with ``{instruction}`` and ``{query}``; ``document`` with ``{document}``;
    ``suffix`` ends where the model writes its answer. ``yes`` / ``no`` are the answer tokens
    (each must be a single token of the model's vocabulary). ``bos``: whether the tokenizer's
    beginning-of-sequence token starts the prompt. ``model_types`` are the ``config.json``
    ``model_type`` values for which this template is the default.
    """

    name: str
    head: str
    document: str
    suffix: str
    yes: str
    no: str | None
    default_instruction: str = ""
    instruction_format: str = "{instruction}"
    bos: bool = False
    default_max_length: int = 8192
    model_types: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()

    def format_head(self, query: str, instruction: str | None) -> str:
        """The shared part of the prompt for ``query`` (``instruction=None``: the family's default)."""
        text = self.default_instruction if instruction is None else instruction
        rendered = self.instruction_format.format(instruction=text) if text else ""
        return self.head.format(query=query, instruction=rendered)

    def format_document(self, document: str) -> str:
        """The per-candidate part of the prompt."""
        return self.document.format(document=document)


QWEN3_RERANKER = PromptTemplate(
    name="qwen3-reranker",
    head=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
        "<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
    ),
    document=" {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    yes="yes",
    no="no",
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
    model_types=("qwen3",),
    checkpoints=("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B"),
)

MXBAI_RERANK_V2 = PromptTemplate(
    name="mxbai-rerank-v2",
    head=(
        "<|endoftext|><|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\n{instruction}query: {query}\n"
    ),
    document="document: {document}",
    suffix=(
        "\nYou are a search relevance expert who evaluates how well documents match search queries. For each "
        "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
        "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:<|im_end|>\n<|im_start|>assistant\n"
    ),
    yes="1",
    no="0",
    instruction_format="instruction: {instruction}\n",
    model_types=("qwen2",),
    checkpoints=("mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2"),
)

BGE_RERANKER_GEMMA = PromptTemplate(
    name="bge-reranker-v2-gemma",
    head="A: {query}\n",
    document="B: {document}",
    suffix=(
        "\nGiven a query A and a passage B, determine whether the passage contains an answer to the query by "
        "providing a prediction of either 'Yes' or 'No'."
    ),
    yes="Yes",
    no=None,
    bos=True,
    model_types=("gemma", "gemma2"),
    checkpoints=("BAAI/bge-reranker-v2-gemma",),
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (QWEN3_RERANKER, MXBAI_RERANK_V2, BGE_RERANKER_GEMMA)}


def template_for_model_type(model_type: str) -> PromptTemplate | None:
    """The default template for a causal model's ``model_type``, if crossrank knows one."""
    return next((t for t in TEMPLATES.values() if model_type in t.model_types), None)
