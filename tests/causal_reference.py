"""Reference implementations of the causal-LM rerankers, written from their authors' published code.

Each function follows one file of the model's authors, statement for statement where it builds
token ids (which pieces are tokenized together, where special tokens go, how truncation cuts), and
takes a ``transformers`` tokenizer and model as that code does. Nothing here imports crossrank: the
tests hold crossrank's token ids and scores to these.

Scores are computed one prompt at a time: the authors left-pad a batch and pass no position ids,
so their scores move with the batch a prompt is padded into (issue #25); a batch of one is their
code without that drift.

``prepare_for_model`` (transformers 4, used by mxbai-rerank and FlagEmbedding) is gone from
transformers 5's fast tokenizers; :func:`_prepare_for_model_only_second` is its
``add_special_tokens=False, truncation="only_second"`` path (``tokenization_utils_base.py``:
``truncate_sequences`` removes ``total - max_length`` ids from the end of the second sequence).
"""

from __future__ import annotations

from typing import Any

import torch


def _prepare_for_model_only_second(ids: list[int], pair_ids: list[int], max_length: int) -> list[int]:
    """``prepare_for_model(ids, pair_ids, truncation="only_second", max_length=..., add_special_tokens=False)``."""
    total = len(ids) + len(pair_ids)
    if total > max_length:
        pair_ids = pair_ids[: -(total - max_length)]
    return ids + pair_ids


def _last_logits(model: Any, ids: list[int]) -> torch.Tensor:
    """``model(**inputs).logits[:, -1, :]`` for one unpadded prompt.

    ``logits_to_keep=1`` projects only the last position onto the vocabulary: the same numbers as
    projecting every position and keeping the last, without a (positions x 151,669) matrix.
    """
    with torch.no_grad():
        inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        return model(**inputs, logits_to_keep=1).logits[0, -1, :]


# --------------------------------------------------------------------------------------------- Qwen3-Reranker
# QwenLM/Qwen3-Embedding, examples/qwen3_reranker_transformers.py (the same code is in the README and
# the Qwen/Qwen3-Reranker-* model cards).

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def qwen3_format_instruction(instruction: str | None, query: str, doc: str) -> str:
    """``format_instruction``."""
    if instruction is None:
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
    return "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032 (as written)
        instruction=instruction, query=query, doc=doc
    )


def qwen3_input_ids(
    tokenizer: Any, pairs: list[tuple[str, str]], instruction: str | None = None, max_length: int = 8192
) -> list[list[int]]:
    """``process_inputs`` (before ``tokenizer.pad``): each pair's unpadded ids."""
    prefix_tokens = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    texts = [qwen3_format_instruction(instruction, q, d) for q, d in pairs]
    inputs = tokenizer(
        texts,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
    )
    return [prefix_tokens + ele + suffix_tokens for ele in inputs["input_ids"]]


def qwen3_scores(model: Any, tokenizer: Any, rows: list[list[int]]) -> list[tuple[float, float]]:
    """``compute_logits``: per prompt, the log-softmax of (no, yes) at the last position.

    The authors return ``exp`` of the second column, P(yes); both columns are returned so a test
    can also check the log-odds ``log P(yes) - log P(no)`` where P saturates.
    """
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    out = []
    for ids in rows:
        batch_scores = _last_logits(model, ids)[None, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        out.append((float(batch_scores[0, 0]), float(batch_scores[0, 1])))
    return out


# --------------------------------------------------------------------------------------------- mxbai-rerank-v2
# mixedbread-ai/mxbai-rerank, mxbai_rerank/mxbai_rerank_v2.py (class MxbaiRerankV2).

MXBAI_SEP = "\n"
MXBAI_INSTRUCTION_PROMPT = "instruction: {instruction}"
MXBAI_QUERY_PROMPT = "query: {query}"
MXBAI_DOC_PROMPT = "document: {document}"
MXBAI_TASK_PROMPT = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
MXBAI_CHAT_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
MXBAI_CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


class MxbaiRerankV2Reference:
    """``__init__`` (its length settings), ``prepare_predefined_inputs``, ``prepare_inputs``, ``forward``.

    ``max_length``: the authors' ``max_length`` (tokens of query and document, the template not
    counted); ``tokenizer.model_max_length`` caps it as in their ``prepare_predefined_inputs``.
    """

    def __init__(self, tokenizer: Any, max_length: int = 8192) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length or tokenizer.model_max_length
        self.model_max_length = tokenizer.model_max_length
        self.prepare_predefined_inputs()

    def prepare_predefined_inputs(self) -> None:
        def get_input_ids(x: str) -> list[int]:
            return list(self.tokenizer(x, return_tensors=None, add_special_tokens=False)["input_ids"])

        self.yes_loc = get_input_ids("1")[0]
        self.no_loc = get_input_ids("0")[0]
        self.task_prompt_inputs = get_input_ids(MXBAI_TASK_PROMPT)
        self.sep_inputs = get_input_ids(MXBAI_SEP)
        self.chat_template_prefix_inputs = get_input_ids(MXBAI_CHAT_PREFIX)
        self.chat_template_suffix_inputs = get_input_ids(MXBAI_CHAT_SUFFIX)
        self.predefined_length = (
            len(self.chat_template_prefix_inputs)
            + len(self.task_prompt_inputs)
            + len(self.chat_template_suffix_inputs)
            + len(self.sep_inputs)
        )
        if self.max_length + self.predefined_length > self.model_max_length:
            self.max_length = self.model_max_length - self.predefined_length

    def concat_input_ids(self, input_ids: list[int]) -> list[int]:
        return (
            self.chat_template_prefix_inputs
            + input_ids
            + self.sep_inputs
            + self.task_prompt_inputs
            + self.chat_template_suffix_inputs
        )

    def input_ids(self, queries: list[str], documents: list[str], *, instruction: str | None = None) -> list[list[int]]:
        """``prepare_inputs`` (before ``tokenizer.pad``): each pair's unpadded ids."""
        inputs = []
        instruction_prompt = MXBAI_INSTRUCTION_PROMPT.format(instruction=instruction) if instruction else None
        for query, document in zip(queries, documents):
            query_prompt = MXBAI_QUERY_PROMPT.format(query=query)
            if instruction_prompt:
                query_prompt = "".join([instruction_prompt, MXBAI_SEP, query_prompt])
            query_inputs = self.tokenizer(
                query_prompt,
                return_tensors=None,
                add_special_tokens=False,
                max_length=self.max_length * 3 // 4,
                truncation=True,
            )
            available_tokens = self.model_max_length - len(query_inputs["input_ids"]) - self.predefined_length
            doc_maxlen = min(available_tokens, self.max_length)
            document_inputs = self.tokenizer(
                MXBAI_DOC_PROMPT.format(document=document),
                return_tensors=None,
                add_special_tokens=False,
                max_length=doc_maxlen,
                truncation=True,
            )
            item = _prepare_for_model_only_second(
                list(query_inputs["input_ids"]), self.sep_inputs + list(document_inputs["input_ids"]), self.max_length
            )
            inputs.append(self.concat_input_ids(item))
        return inputs

    def scores(self, model: Any, rows: list[list[int]]) -> list[float]:
        """``forward``: ``logits[:, -1, yes_loc] - logits[:, -1, no_loc]`` per prompt."""
        out = []
        for ids in rows:
            last = _last_logits(model, ids)
            out.append(float(last[self.yes_loc] - last[self.no_loc]))
        return out


# --------------------------------------------------------------------------------------------- bge-reranker-v2-gemma
# FlagOpen/FlagEmbedding, research/llm_reranker/README.md "For LLM-based reranker" (get_inputs; the same
# code is on the BAAI/bge-reranker-v2-gemma model card).

BGE_GEMMA_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing "
    "a prediction of either 'Yes' or 'No'."
)


def bge_gemma_input_ids(
    tokenizer: Any, pairs: list[tuple[str, str]], prompt: str | None = None, max_length: int = 1024
) -> list[list[int]]:
    """``get_inputs`` (before ``tokenizer.pad``): each pair's unpadded ids.

    ``max_length`` is the authors' (query, separator and passage with ``<bos>``); the whole prompt
    is at most ``max_length + len(sep_inputs) + len(prompt_inputs)``, their padding length.
    """
    if prompt is None:
        prompt = BGE_GEMMA_PROMPT
    sep = "\n"
    prompt_inputs = tokenizer(prompt, return_tensors=None, add_special_tokens=False)["input_ids"]
    sep_inputs = tokenizer(sep, return_tensors=None, add_special_tokens=False)["input_ids"]
    inputs = []
    for query, passage in pairs:
        query_inputs = tokenizer(
            f"A: {query}",
            return_tensors=None,
            add_special_tokens=False,
            max_length=max_length * 3 // 4,
            truncation=True,
        )
        passage_inputs = tokenizer(
            f"B: {passage}", return_tensors=None, add_special_tokens=False, max_length=max_length, truncation=True
        )
        item = _prepare_for_model_only_second(
            [tokenizer.bos_token_id] + query_inputs["input_ids"], sep_inputs + passage_inputs["input_ids"], max_length
        )
        inputs.append(item + sep_inputs + prompt_inputs)
    return inputs


def flag_llm_reranker_input_ids(
    tokenizer: Any, pairs: list[tuple[str, str]], prompt: str | None = None, max_length: int = 512
) -> list[list[int]]:
    """FlagEmbedding/inference/reranker/decoder_only/base.py ``BaseLLMReranker.compute_score_single_gpu``.

    ``get_detailed_inputs`` (abc/inference/AbsReranker.py) first turns (q, p) into ("A: q", "B: p")
    with the defaults ``query_instruction_for_rerank="A: "`` and ``passage_instruction_for_rerank="B: "``.
    Its pair bound is looser than get_inputs' (``encode_max_length = max_length + len(sep_inputs) +
    len(prompt_inputs)`` before sep and prompt are appended), so the two agree where nothing is cut.
    """
    query_max_length = max_length * 3 // 4
    queries = [f"A: {q}" for q, _ in pairs]
    passages = [f"B: {p}" for _, p in pairs]
    queries_inputs = tokenizer(
        queries, return_tensors=None, add_special_tokens=False, max_length=query_max_length, truncation=True
    )["input_ids"]
    passages_inputs = tokenizer(
        passages, return_tensors=None, add_special_tokens=False, max_length=max_length, truncation=True
    )["input_ids"]
    if prompt is None:
        prompt = BGE_GEMMA_PROMPT
    prompt_inputs = tokenizer(prompt, return_tensors=None, add_special_tokens=False)["input_ids"]
    sep_inputs = tokenizer("\n", return_tensors=None, add_special_tokens=False)["input_ids"]
    encode_max_length = max_length + len(sep_inputs) + len(prompt_inputs)
    out = []
    for q, p in zip(queries_inputs, passages_inputs):
        if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.pad_token_id:
            item = _prepare_for_model_only_second([tokenizer.bos_token_id] + q, sep_inputs + p, encode_max_length)  # noqa: RUF005
        else:
            item = _prepare_for_model_only_second(q, sep_inputs + p, encode_max_length)
        out.append(item + sep_inputs + prompt_inputs)
    return out


def bge_gemma_scores(model: Any, tokenizer: Any, rows: list[list[int]]) -> list[float]:
    """``model(**inputs).logits[:, -1, yes_loc]`` per prompt (``yes_loc``: the first id of "Yes")."""
    yes_loc = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    return [float(_last_logits(model, ids)[yes_loc]) for ids in rows]
