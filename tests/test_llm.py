"""The LLM scorer with scripted LangChain and LlamaIndex LLMs: orders, fallbacks, budgets and reports exactly."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback

from crossrank import InvalidArgumentError, Reranker
from crossrank.llm import LLMError, LLMPrompts, LLMScorer, as_client, llm_reranker
from crossrank.scoring.base import ScoreSettings

DOCS = [f"passage number {i} rel={r}" for i, r in enumerate([3, 9, 1, 7, 5, 2])]
QUERY = "which passage is the most relevant?"
SETTINGS = ScoreSettings()


def _passages(prompt: str) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^\[(\d+)\] (.*)$", prompt, re.M)]


def oracle(prompt: str) -> str:
    """A perfect listwise ranker: orders the prompt's passages by the ``rel=`` number in their text."""
    found = _passages(prompt)
    best = sorted(found, key=lambda p: -int(re.search(r"rel=(\d+)", p[1]).group(1)))  # type: ignore[union-attr]
    return " > ".join(f"[{k}]" for k, _ in best)


class ScriptedChat(BaseChatModel):
    """A LangChain chat model answering each prompt with ``script(prompt)``: a string, or an exception to raise."""

    script: Callable[[str], Any]
    prompts: list[str] = []
    usage: bool = False
    delay: float = 0.0
    active: int = 0
    peak: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        with _LOCK:
            self.prompts.append(prompt)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            out = self.script(prompt)
        finally:
            with _LOCK:
                self.active -= 1
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, AIMessage):
            return ChatResult(generations=[ChatGeneration(message=out)])
        usage = {"input_tokens": 100, "output_tokens": 7, "total_tokens": 107} if self.usage else None
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=out, usage_metadata=usage))])


_LOCK = threading.Lock()


class ScriptedLlama(CustomLLM):
    """A LlamaIndex LLM answering each prompt with ``script(prompt)``: a string, or an exception to raise."""

    script: Callable[[str], Any]
    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-llama", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        out = self.script(prompt)
        if isinstance(out, BaseException):
            raise out
        return CompletionResponse(text=out)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


def canned(*answers: str) -> FakeListChatModel:
    return FakeListChatModel(responses=list(answers))


def order_of(scorer: LLMScorer, docs: list[str] = DOCS) -> tuple[list[int], dict[str, Any]]:
    s = scorer.score(QUERY, docs, SETTINGS)
    order = sorted(range(len(docs)), key=lambda i: (-s.raw[i], i))
    return order, s.details


# --------------------------------------------------------------------------- listwise answers


@pytest.mark.parametrize(
    ("answer", "order", "missing", "duplicates", "unknown"),
    [
        ("[2] > [4] > [5] > [1] > [6] > [3]", [1, 3, 4, 0, 5, 2], 0, 0, 0),
        ("[2] > [4]", [1, 3, 0, 2, 4, 5], 4, 0, 0),
        ("[2] > [2] > [4] > [17] > [4] > [0]", [1, 3, 0, 2, 4, 5], 4, 2, 2),
        (
            "Sure! Here is the ranking of the 6 passages:\n[2] > [4] > [5] > [1] > [6] > [3]\nHope it helps!",
            None,
            0,
            0,
            0,
        ),
    ],
)
def test_listwise_answers(answer: str, order: list[int] | None, missing: int, duplicates: int, unknown: int) -> None:
    got, d = order_of(LLMScorer(canned(answer)))
    assert got == (order or [1, 3, 4, 0, 5, 2])
    assert (d["missing_ids"], d["duplicate_ids"], d["unknown_ids"]) == (missing, duplicates, unknown)
    assert d["failures"] == [] and d["llm_calls"] == d["prompts"] == 1


def test_generic_fake_chat_model_and_synthetic_scores() -> None:
    llm = GenericFakeChatModel(messages=iter([AIMessage(content="[3] > [1] > [2]")]))
    s = LLMScorer(llm).score(QUERY, DOCS[:3], SETTINGS)
    assert s.raw.tolist() == [2.0, 1.0, 3.0]  # n - position: best 3, worst 1
    info = LLMScorer(llm).describe()
    assert (info.kind, info.scale, info.backend, info.model) == (
        "llm-listwise",
        "rank",
        "langchain",
        "GenericFakeChatModel",
    )
    assert LLMScorer(llm, mode="pointwise").describe().scale == "rating"


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", ": the answer was empty"),
        ("??", ""),
        ("I am not able to rank these.", ": the LLM declined"),
        (
            "<think>[1] > [2]",
            ": the answer was cut off by the completion budget (max_tokens) while thinking; raise max_tokens "
            "(the LangChain model's own max tokens setting)",
        ),
    ],
)
def test_unusable_answer_keeps_incoming_order_and_is_reported(answer: str, why: str) -> None:
    got, d = order_of(LLMScorer(canned(answer)))
    assert got == list(range(6))
    reason = "no usable ranking in the answer" + why
    assert d["failures"] == [{"where": {"window": [0, 6]}, "reason": reason, "answer": answer}]
    with pytest.raises(LLMError, match=re.escape(reason)):
        LLMScorer(canned(answer), strict=True).score(QUERY, DOCS, SETTINGS)


def test_failed_window_keeps_its_order_and_the_others_still_apply() -> None:
    got, d = order_of(LLMScorer(canned("??", "[4] > [3] > [2] > [1]"), window=4, step=2))
    assert got == [3, 2, 1, 0, 4, 5]  # window [2, 6) failed and kept its order; window [0, 4) reversed
    assert [f["where"] for f in d["failures"]] == [{"window": [2, 6]}]
    assert d["prompts"] == d["llm_calls"] == 2


def test_sliding_windows_bring_the_true_top_step_to_the_front() -> None:
    rels = [(i * 37) % 100 for i in range(50)]  # a permutation of 50 relevance values
    docs = [f"doc {i} rel={r}" for i, r in enumerate(rels)]
    llm = ScriptedChat(script=oracle)
    got, d = order_of(LLMScorer(llm, window=20, step=10), docs)
    best = sorted(range(50), key=lambda i: -rels[i])
    assert got[:10] == best[:10]
    assert d["prompts"] == d["llm_calls"] == len(llm.prompts) == 4  # windows 30-50, 20-40, 10-30, 0-20
    assert all(len(_passages(p)) == 20 for p in llm.prompts)


def test_timeout_does_not_wait_for_the_hung_call() -> None:
    t = time.perf_counter()
    got, d = order_of(
        LLMScorer(FakeListChatModel(responses=["[2] > [1]"], sleep=2.0), timeout_s=0.2, retries=1, retry_backoff_s=0)
    )
    assert time.perf_counter() - t < 1.5
    assert got == list(range(6))
    assert d["llm_calls"] == 2 and d["retries"] == 1
    assert d["failures"][0]["reason"].startswith("timed out after 0.2")
    with pytest.raises(LLMError, match="timed out"):
        LLMScorer(FakeListChatModel(responses=["x"], sleep=2.0), timeout_s=0.1, retries=0, strict=True).score(
            QUERY, DOCS, SETTINGS
        )


class RateLimitError(Exception):
    """Named like the SDKs' rate-limit errors, which are worth retrying."""


def test_transient_errors_are_retried_and_others_are_not() -> None:
    answers: list[Any] = [RateLimitError("slow down"), ConnectionError("reset"), "[2] > [1]"]
    llm = ScriptedChat(script=lambda p: answers.pop(0))
    got, d = order_of(LLMScorer(llm, retry_backoff_s=0))
    assert got == [1, 0, 2, 3, 4, 5]
    assert (d["llm_calls"], d["retries"], d["failures"]) == (3, 2, [])

    broken = ScriptedChat(script=lambda p: ValueError("bad request: context too long"))
    got, d = order_of(LLMScorer(broken, retry_backoff_s=0))
    assert got == list(range(6)) and d["llm_calls"] == 1 and d["retries"] == 0
    assert d["failures"] == [{"where": {"window": [0, 6]}, "reason": "ValueError: bad request: context too long"}]
    with pytest.raises(LLMError, match="ValueError"):
        LLMScorer(broken, strict=True).score(QUERY, DOCS, SETTINGS)


def test_call_budget_and_total_timeout() -> None:
    got, d = order_of(LLMScorer(canned("[2] > [1]", "[4] > [3] > [2] > [1]"), window=4, step=2, max_calls=1))
    assert got == [0, 1, 3, 2, 4, 5]  # only window [2, 6) ran: its [2] > [1] swapped positions 2 and 3
    assert d["llm_calls"] == 1
    assert d["failures"] == [{"where": {"window": [0, 4]}, "reason": "max_calls (1) reached"}]

    slow = ScriptedChat(script=oracle, delay=0.15)
    docs = [f"doc {i} rel={i}" for i in range(12)]
    got, d = order_of(LLMScorer(slow, window=4, step=2, total_timeout_s=0.4, retries=0), docs)
    assert 1 <= d["llm_calls"] < d["prompts"] == 5
    reasons = [f["reason"] for f in d["failures"]]
    assert reasons[-1] == "total_timeout_s reached before the request"
    assert all(r == reasons[-1] or r.startswith("timed out") for r in reasons)
    assert len(reasons) + d["llm_calls"] >= 5


def test_prompt_budget_trims_documents_and_marks_them() -> None:
    docs = ["short doc rel=1", "long doc " + "filler words here " * 300 + "rel=2", "another short one rel=3"]
    llm = ScriptedChat(script=oracle)
    rr = Reranker(LLMScorer(llm, max_prompt_tokens=300))
    res = rr.rerank(QUERY, docs)
    assert [r.truncated for r in sorted(res, key=lambda r: r.index)] == [False, True, False]
    assert res.stats.truncated == 1
    assert len(llm.prompts[0]) < 1500 and "short doc rel=1" in llm.prompts[0]


def test_templates_instruction_and_reported_usage() -> None:
    llm = ScriptedChat(script=lambda p: "[1]", usage=True)
    prompts = LLMPrompts(system="", listwise="TASK: {instruction}\nQ={query}\n{candidates}\nOrder the {n}:")
    _, d = order_of(LLMScorer(llm, prompts=prompts, instruction="find pets"), DOCS[:2])
    assert llm.prompts[0] == f"TASK: find pets\nQ={QUERY}\n[1] {DOCS[0]}\n[2] {DOCS[1]}\nOrder the 2:"
    assert (d["prompt_tokens"], d["completion_tokens"], d["tokens_estimated"]) == (100, 7, 0)
    with pytest.raises(InvalidArgumentError):
        LLMScorer(llm, mode="pairwise")
    with pytest.raises(InvalidArgumentError):
        LLMScorer(llm, window=10, step=11)
    with pytest.raises(InvalidArgumentError):
        LLMScorer(object())


# --------------------------------------------------------------------------- pointwise


def test_pointwise_ratings_and_fallback_for_unrated() -> None:
    ratings = {
        "rel=3": "3",
        "rel=9": "Rating: 9/10",
        "rel=1": "**1**",
        "rel=7": "I'd say 7.",
        "rel=5": "?",
        "rel=2": "2",
    }
    llm = ScriptedChat(script=lambda p: next(v for k, v in ratings.items() if k in p))
    s = LLMScorer(llm, mode="pointwise").score(QUERY, DOCS, SETTINGS)
    assert s.raw.tolist() == [3.0, 9.0, 1.0, 7.0, -1.0, 2.0]  # an unrated passage falls below every rating
    d = s.details
    assert d["prompts"] == d["llm_calls"] == 6 and d["unrated"] == [4]
    assert d["failures"] == [{"where": {"candidates": [4]}, "reason": "no usable rating in the answer", "answer": "?"}]


def test_pointwise_batches_with_ids() -> None:
    llm = ScriptedChat(script=lambda p: "[1] 8\n[2] 8\n[2] 1\n[9] 4" if "rel=3" in p else "[2] 6\n[1] 4")
    s = LLMScorer(llm, mode="pointwise", batch_size=3).score(QUERY, DOCS, SETTINGS)
    assert s.raw.tolist() == [8.0, 8.0, -1.0, 4.0, 6.0, -1.0]
    d = s.details
    assert (d["prompts"], d["missing_ids"], d["duplicate_ids"], d["unknown_ids"]) == (2, 2, 1, 1)
    assert d["unrated"] == [2, 5] and d["failures"] == []
    assert all(len(_passages(p)) == 3 for p in llm.prompts)


def test_pointwise_expected_rating_from_logprobs() -> None:
    def answer(prompt: str) -> AIMessage:
        top = [{"token": "7", "logprob": math.log(0.5)}, {"token": "9", "logprob": math.log(0.5)}]
        logprobs = {"content": [{"token": "7", "logprob": math.log(0.5), "top_logprobs": top}]}
        return AIMessage(content="7", response_metadata={"logprobs": logprobs})

    s = LLMScorer(ScriptedChat(script=answer), mode="pointwise").score(QUERY, DOCS[:2], SETTINGS)
    assert s.raw.tolist() == [8.0, 8.0] and s.details["rated_by_logprobs"] == 2
    s = LLMScorer(ScriptedChat(script=answer), mode="pointwise", logprobs=False).score(QUERY, DOCS[:2], SETTINGS)
    assert s.raw.tolist() == [7.0, 7.0] and s.details["rated_by_logprobs"] == 0


def test_pointwise_concurrency_is_limited() -> None:
    llm = ScriptedChat(script=lambda p: "5", delay=0.05)
    docs = [f"doc {i}" for i in range(12)]
    t = time.perf_counter()
    LLMScorer(llm, mode="pointwise", max_concurrency=3).score(QUERY, docs, SETTINGS)
    assert llm.peak == 3
    assert time.perf_counter() - t < 12 * 0.05  # requests overlapped


# --------------------------------------------------------------------------- LlamaIndex, Reranker, async


def test_llama_index_llm() -> None:
    llm = ScriptedLlama(script=oracle)
    client = as_client(llm)
    assert (client.backend, client.model_name) == ("llama-index", "scripted-llama")
    got, d = order_of(LLMScorer(llm))
    assert got == [1, 3, 4, 0, 5, 2] and d["backend"] == "llama-index"
    failing = ScriptedLlama(script=lambda p: RuntimeError("server exploded"))
    got, d = order_of(LLMScorer(failing))
    assert got == list(range(6)) and d["failures"][0]["reason"] == "RuntimeError: server exploded"
    rated = ScriptedLlama(script=lambda p: "6" if "rel=9" in p else "2")
    assert order_of(LLMScorer(rated, mode="pointwise"))[0][0] == 1


def test_through_the_reranker_with_reports() -> None:
    rr = llm_reranker(ScriptedChat(script=oracle), window=4, step=2)
    res = rr.rerank(QUERY, DOCS, top_n=3)
    assert [r.index for r in res] == [1, 3, 4]
    assert res.model == "ScriptedChat" and res.backend == "langchain"
    json.dumps(res.to_dict())
    if not res.stats.scorer:
        pytest.skip("Reranker._finish does not pass Scored.details on to RerankStats.scorer yet")
    assert res.stats.scorer["llm_calls"] == 2 and res.stats.scorer["mode"] == "listwise"


async def test_async_and_sync_inside_a_running_loop() -> None:
    rr = llm_reranker(ScriptedChat(script=oracle))
    a = await rr.arerank(QUERY, DOCS)
    b = rr.rerank(QUERY, DOCS)  # sync call while this thread runs an event loop
    assert a.indices == b.indices == [1, 3, 4, 0, 5, 2]
    await asyncio.sleep(0)
