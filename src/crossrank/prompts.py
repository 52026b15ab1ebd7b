"""Prompt templates of causal-LM rerankers, declared in one place per family, as their authors build them.

A causal-LM reranker reads one prompt per (query, document) and answers with a token: the raw
score is ``logit(yes) - logit(no)`` at the last position (sentence-transformers' ``LogitScore``),
so ``normalize="sigmoid"`` gives P(yes), the family's own probability; a family scored by one
token's logit alone (bge-reranker-v2-gemma) has ``no=None``.

Token ids, not just text, must equal the authors' (a byte-level BPE merges ``?`` and ``\\n`` into
one token when they are tokenized together, and not when they are tokenized apart), so a template
names the *pieces* its authors tokenize one at a time, in order::

    [bos] + prefix + query piece + separator + document piece + tail[0] + tail[1] + ...

``joined=True`` means the authors format query and document into one string and tokenize it whole
(Qwen3-Reranker); the encoder then splits that string's tokens at the document's first character.
Only the document is ever truncated or windowed, so the instruction, the query and the answer
slot are never cut off; the query piece keeps at most 3/4 of the room the fixed pieces leave, as
the authors cap it.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossrank.errors import InvalidArgumentError


@dataclass(frozen=True)
class PromptTemplate:
    """One causal reranker family's prompt pieces and answer tokens.

    ``prefix``: text before the query, tokenized on its own ("" for none). ``query``: formatted
    with ``{instruction}`` and ``{query}``. ``separator``: tokenized on its own between the query
    and the document pieces. ``document``: formatted with ``{document}``. ``tail``: the pieces
    after the document, each tokenized on its own (``{prompt}`` is the family's trailing task
    prompt); the last one ends where the model writes its answer. ``yes`` / ``no``: the answer
    tokens (each a single token of the vocabulary). ``bos``: whether the tokenizer's
    beginning-of-sequence token starts the prompt. ``default_instruction``: None when the family
    has no instruction slot; ``default_prompt``: None when it has no ``{prompt}`` piece.
    ``model_types`` are the ``config.json`` ``model_type`` values for which this template is the
    default; ``source`` is the authors' code the pieces follow.
    """

    name: str
    prefix: str
    query: str
    separator: str
    document: str
    tail: tuple[str, ...]
    yes: str
    no: str | None
    joined: bool = False
    default_instruction: str | None = None
    instruction_format: str = "{instruction}"
    default_prompt: str | None = None
    bos: bool = False
    default_max_length: int = 8192
    model_types: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    source: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """The prompt options this family takes (``instruction``, ``prompt``)."""
        return tuple(
            name
            for name, default in (("instruction", self.default_instruction), ("prompt", self.default_prompt))
            if default is not None
        )

    def check_options(self, *, instruction: str | None = None, prompt: str | None = None) -> None:
        """Raise :class:`InvalidArgumentError` for an option this family has no slot for (never drop it)."""
        for name, value in (("instruction", instruction), ("prompt", prompt)):
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidArgumentError(f"{name} must be a str or None, got {type(value).__name__}")
            if name not in self.options:
                takes = " or ".join(f"{o}=" for o in self.options) or "no prompt option"
                raise InvalidArgumentError(
                    f"the {self.name} prompt has no {name} slot: it takes {takes} "
                    f"(as {self.source or 'its authors'} builds it)"
                )

    def format_query(self, query: str, instruction: str | None = None) -> str:
        """The query piece (``instruction=None``: the family's default instruction)."""
        text = self.default_instruction if instruction is None else instruction
        rendered = self.instruction_format.format(instruction=text) if text else ""
        return self.query.format(query=query, instruction=rendered)

    def format_document(self, document: str) -> str:
        """The document piece."""
        return self.document.format(document=document)

    def format_tail(self, prompt: str | None = None) -> tuple[str, ...]:
        """The pieces after the document (``prompt=None``: the family's default trailing prompt)."""
        text = self.default_prompt if prompt is None else prompt
        return tuple(p.replace("{prompt}", text or "") for p in self.tail)


QWEN3_RERANKER = PromptTemplate(
    # QwenLM/Qwen3-Embedding examples/qwen3_reranker_transformers.py (and the model card): the system
    # prefix and the suffix are tokenized on their own; format_instruction's one string
    # "<Instruct>: {i}\n<Query>: {q}\n<Document>: {d}" is tokenized whole, truncated from the right.
    name="qwen3-reranker",
    prefix=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    ),
    query="<Instruct>: {instruction}\n<Query>: {query}\n<Document>:",
    separator="",
    document=" {document}",
    tail=("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",),
    yes="yes",
    no="no",
    joined=True,
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
    model_types=("qwen3",),
    checkpoints=("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B"),
    source="QwenLM/Qwen3-Embedding examples/qwen3_reranker_transformers.py",
)

MXBAI_RERANK_V2 = PromptTemplate(
    # mixedbread-ai/mxbai-rerank mxbai_rerank/mxbai_rerank_v2.py: chat prefix, "[instruction: {i}\n]query: {q}",
    # "\n", "document: {d}", "\n", the task prompt and the chat suffix, each tokenized on its own and
    # concatenated. "<|endoftext|>" is their padding token, not part of the prompt.
    name="mxbai-rerank-v2",
    prefix=(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    ),
    query="{instruction}query: {query}",
    separator="\n",
    document="document: {document}",
    tail=(
        "\n",
        "You are a search relevance expert who evaluates how well documents match search queries. For each "
        "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
        "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    yes="1",
    no="0",
    default_instruction="",
    instruction_format="instruction: {instruction}\n",
    model_types=("qwen2",),
    checkpoints=("mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2"),
    source="mixedbread-ai/mxbai-rerank mxbai_rerank/mxbai_rerank_v2.py",
)

BGE_RERANKER_GEMMA = PromptTemplate(
    # FlagOpen/FlagEmbedding research/llm_reranker/README.md get_inputs (and
    # FlagEmbedding/inference/reranker/decoder_only/base.py): [bos] + "A: {q}", "\n" + "B: {d}", then
    # "\n" and the prompt, each tokenized on its own; prompt= replaces the trailing prompt.
    name="bge-reranker-v2-gemma",
    prefix="",
    query="A: {query}",
    separator="\n",
    document="B: {document}",
    tail=("\n", "{prompt}"),
    yes="Yes",
    no=None,
    default_prompt=(
        "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
        "providing a prediction of either 'Yes' or 'No'."
    ),
    bos=True,
    model_types=("gemma", "gemma2"),
    checkpoints=("BAAI/bge-reranker-v2-gemma",),
    source="FlagOpen/FlagEmbedding research/llm_reranker/README.md get_inputs",
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (QWEN3_RERANKER, MXBAI_RERANK_V2, BGE_RERANKER_GEMMA)}


def names_checkpoint(template: PromptTemplate, name: str) -> bool:
    """Whether ``name`` (a Hub id, a local path, a Hugging Face cache folder) names one of the family's
    checkpoints (``Qwen/Qwen3-Reranker-0.6B``, ``.../models--Qwen--Qwen3-Reranker-0.6B/...``,
    ``/srv/qwen3-reranker-4b``) or the family itself."""
    n = name.lower().replace("--", "/")
    return template.name in n or any(c.lower() in n or c.split("/")[-1].lower() in n for c in template.checkpoints)


def template_for_model_type(model_type: str) -> PromptTemplate | None:
    """The default template for a causal model's ``model_type``, if crossrank knows one."""
    return next((t for t in TEMPLATES.values() if model_type in t.model_types), None)
