"""LLM answers read the way a person reads them, through every path an answer takes into crossrank.

Each answer shape (a ``>`` chain, an explanation before the final ranking, a refusal that mentions
a number, numbered lists, JSON, markdown tables, ids in words, reasoning blocks, answers cut off
while thinking, ...) is scripted into a real LangChain chat model, a real LlamaIndex LLM, both
adapters (``CrossRankCompressor(llm=...)``, ``CrossRankRerank(llm=...)``) and a loopback
OpenAI-compatible HTTP server (chat-completions JSON, ``finish_reason`` included). Each yields
either the intended order, or the incoming order with the failure recorded (and raised under
``strict=True``). The LLM is a fake: these tests are about reading answers and ordering, not models.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLLM
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, TextBlock, ThinkingBlock
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.schema import NodeWithScore, TextNode

from crossrank import Reranker
from crossrank.llm import LLMError, LLMScorer
from crossrank.llm.parsing import parse_permutation
from crossrank.llm.scorer import CONTEXT_TOKENS, THINKING_TOKENS, default_completion_tokens
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings
from langchain_crossrank import CrossRankCompressor
from llama_index.postprocessor.crossrank import CrossRankRerank

QUERY = "does aspirin prevent heart attacks?"
DOCS = [f"passage about aspirin, number {i}" for i in range(6)]
BEST = [2, 4, 5, 1, 6, 3]  # the intended ranking, as the 1-based ids of the prompt
CHAIN = " > ".join(f"[{k}]" for k in BEST)
WORDS = ["one", "two", "three", "four", "five", "six"]
NO_RANKING = "no usable ranking in the answer"


@dataclass(frozen=True)
class Shape:
    """An answer, and what a person reads in it: ``order`` (1-based ids, best first) or a failure ``reason``."""

    name: str
    answer: str
    order: tuple[int, ...] | None = None
    reason: str | None = None
    missing: int = 0
    duplicates: int = 0
    unknown: int = 0


SHAPES = [
    Shape("chain", CHAIN, tuple(BEST)),
    Shape("chain-no-spaces", ">".join(f"[{k}]" for k in BEST), tuple(BEST)),
    Shape(
        "refusal-with-a-number",  # issue #25: read as [6] before
        "I'm sorry, but I can't rank these 6 passages: none of them answers the query.",
        reason=f"{NO_RANKING}: the LLM declined",
    ),
    Shape(
        "refusal-with-the-window-size",
        "I'm sorry, but I can't rank these 20 passages.",
        reason=f"{NO_RANKING}: the LLM declined",
    ),
    Shape(
        "explanation-then-final-ranking",  # issue #25: the two passages ranked last came first before
        "Passage [3] mentions the topic but only in passing, passage [6] is about a different population. "
        f"Passage [2] directly tests the claim.\n\nFinal ranking: {CHAIN}",
        tuple(BEST),
    ),
    Shape(
        "elided-final-ranking",  # unlisted ids go where the "…" is, not after the two ranked last
        "Final ranking: [2] > [4] > … > [6] > [3]",
        (2, 4, 1, 5, 6, 3),
        missing=2,
    ),
    # Ties, written in the order a person reads them (RankGPT's own reader keeps the ids in written order):
    Shape("tie-equals", "[2] = [4] > [5] > [1] > [6] > [3]", tuple(BEST)),
    Shape("tie-at-least", "[2] >= [4] > [5] ≥ [1] > [6] > [3]", tuple(BEST)),
    Shape("tie-approximately", "[2] ≈ [4] > [5] > [1] > [6] ~ [3]", tuple(BEST)),
    Shape("tie-comma", "[2], [4] > [5] > [1] > [6] > [3]", tuple(BEST)),
    Shape(
        "pick-with-a-note",
        "Passage [2] (a 2019 RCT) is the most relevant, then [4], then [5], then [1], then [6], then [3].",
        tuple(BEST),
    ),
    Shape(
        "pick-with-a-clause",
        "Passage [2], which reports the trial itself, is the most relevant, followed by [4], then [5], then [1], "
        "then [6], then [3].",
        tuple(BEST),
    ),
    Shape("code-fence", f"```\n{CHAIN}\n```", tuple(BEST)),
    Shape("bold-ids", " > ".join(f"**[{k}]**" for k in BEST), tuple(BEST)),
    Shape("passage-labels", " > ".join(f"Passage {k}" for k in BEST), tuple(BEST)),
    Shape("bare-numbers", " > ".join(str(k) for k in BEST), tuple(BEST)),
    Shape("ids-as-words", " > ".join(f"passage {WORDS[k - 1]}" for k in BEST), tuple(BEST)),
    Shape("bare-words", " > ".join(WORDS[k - 1] for k in BEST), tuple(BEST)),
    Shape("numbered-list", "\n".join(f"{i}. [{k}]" for i, k in enumerate(BEST, 1)), tuple(BEST)),
    Shape("numbered-line-holding-a-chain", f"1. {CHAIN}", tuple(BEST)),
    Shape(
        "numbered-list-with-reasons",
        "Here is my ranking:\n\n"
        + "\n".join(f"{i}. **Passage {k}** - relevant for reason {i}" for i, k in enumerate(BEST, 1)),
        tuple(BEST),
    ),
    Shape("labelled-bullets", "Ranking:\n" + "\n".join(f"- [{k}]" for k in BEST), tuple(BEST)),
    Shape("one-id-per-line", "\n".join(f"[{k}]" for k in BEST), tuple(BEST)),
    Shape("comma-line", "Ranking: " + ", ".join(str(k) for k in BEST), tuple(BEST)),
    Shape("sentence", "The ranking is " + ", ".join(f"[{k}]" for k in BEST[:-1]) + f" and [{BEST[-1]}].", tuple(BEST)),
    Shape("json-array", "```json\n" + json.dumps(BEST) + "\n```", tuple(BEST)),
    Shape("json-object", json.dumps({"ranking": [f"[{k}]" for k in BEST]}), tuple(BEST)),
    Shape(
        "json-objects-with-ranks",
        json.dumps([{"id": k, "rank": BEST.index(k) + 1} for k in range(1, 7)]),
        tuple(BEST),
    ),
    Shape(
        "markdown-table-rank-column",  # rows in id order: the rank column orders them
        "| Passage | Rank | Why |\n|---|---|---|\n"
        + "\n".join(f"| [{k}] | {BEST.index(k) + 1} | reason |" for k in range(1, 7)),
        tuple(BEST),
    ),
    Shape(
        "ratings-per-passage",
        "\n".join(f"[{k}]: {10 - BEST.index(k)}/10" for k in range(1, 7)),
        tuple(BEST),
    ),
    Shape(
        "most-relevant-then",
        f"Passage {WORDS[BEST[0] - 1]} is the most relevant, "
        + ", ".join(f"then passage {WORDS[k - 1]}" for k in BEST[1:])
        + ".",
        tuple(BEST),
    ),
    Shape("ascending-chain", " < ".join(f"[{k}]" for k in reversed(BEST)), tuple(BEST)),
    Shape("answer-tag", f"<answer>{CHAIN}</answer>", tuple(BEST)),
    Shape("think-block-first", f"<think>Maybe [1] > [2] > [3] > [4] > [5] > [6]? No.</think>\n\n{CHAIN}", tuple(BEST)),
    Shape(  # DeepSeek-R1 / QwQ templates open <think> in the prompt: the answer starts inside it
        "think-opened-by-the-template",
        f"Okay, [1] > [3] > [2] at first sight...\n</think>\n\n{CHAIN}",
        tuple(BEST),
    ),
    Shape(
        "gpt-oss-channels",
        f"<|channel|>analysis<|message|>[1] > [2] first?<|end|><|start|>assistant<|channel|>final<|message|>{CHAIN}",
        tuple(BEST),
    ),
    Shape(
        "cut-off-while-thinking",
        "<think>\nOkay, I need to rank 6 passages. Passage [1] is about aspirin in 2019, with 12 trials",
        reason=f"{NO_RANKING}: the answer was cut off by the completion budget ({{budget}}) while thinking; "
        "raise max_tokens ({how})",
    ),
    Shape("draft-then-final", f"Draft: [1] > [2] > [3] > [4] > [5] > [6]\nWait.\nFinal answer: {CHAIN}", tuple(BEST)),
    Shape(
        "ranking-then-notes-in-id-order",
        f"{CHAIN}\n\nNotes:\n" + "\n".join(f"- [{k}]: note about passage {k}" for k in range(1, 7)),
        tuple(BEST),
    ),
    Shape(
        "duplicates-and-unknown-ids",
        "[2] > [4] > [2] > [9] > [5] > [1] > [6] > [3]",
        tuple(BEST),
        duplicates=1,
        unknown=1,
    ),
    Shape("partial", "[2] > [4]", (2, 4, 1, 3, 5, 6), missing=4),
    Shape("single-id", "[4]", (4, 1, 2, 3, 5, 6), missing=5),
    Shape("numbers-in-prose-only", "The trials enrolled 12 and 2019 patients; p < 0.05.", reason=NO_RANKING),
    Shape("empty", "", reason=f"{NO_RANKING}: the answer was empty"),
]


def _order(ids: tuple[int, ...]) -> list[int]:
    return [k - 1 for k in ids]


def _reason(shape: Shape, budget: str, how: str) -> str:
    assert shape.reason is not None
    return shape.reason.replace("{budget}", budget).replace("{how}", how)


def check(make: Callable[..., LLMScorer], shape: Shape, budget: str, how: str) -> None:
    """Score DOCS through the scorer ``make(strict=...)`` builds; the order and report must be the shape's."""
    s = make(strict=False).score(QUERY, DOCS, ScoreSettings())
    got = sorted(range(len(DOCS)), key=lambda i: (-s.raw[i], i))
    d = s.details
    if shape.order is not None:
        assert got == _order(shape.order)
        assert d["failures"] == []
        assert (d["missing_ids"], d["duplicate_ids"], d["unknown_ids"]) == (
            shape.missing,
            shape.duplicates,
            shape.unknown,
        )
        make(strict=True).score(QUERY, DOCS, ScoreSettings())  # strict: a usable answer raises nothing
        return
    reason = _reason(shape, budget, how)
    assert got == list(range(len(DOCS)))  # the incoming order is kept ...
    assert d["failures"] == [{"where": {"window": [0, 6]}, "reason": reason, "answer": shape.answer[:200]}]
    with pytest.raises(LLMError, match=re.escape(reason)):  # ... and raised under strict=True
        make(strict=True).score(QUERY, DOCS, ScoreSettings())


# --------------------------------------------------------------------------- scripted LLMs


class ScriptedChat(BaseChatModel):
    """A LangChain chat model answering every prompt with ``answer`` (an AIMessage is returned as it is)."""

    answer: Any
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        out = self.answer if isinstance(self.answer, AIMessage) else AIMessage(content=self.answer)
        return ChatResult(generations=[ChatGeneration(message=out)])


class ScriptedStringLLM(BaseLLM):
    """A LangChain string LLM answering ``answer``, with ``info`` as each generation's generation_info."""

    answer: str
    info: dict[str, Any] = {}

    @property
    def _llm_type(self) -> str:
        return "scripted-string"

    def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kw: Any) -> LLMResult:
        return LLMResult(generations=[[Generation(text=self.answer, generation_info=self.info)] for _ in prompts])


class ScriptedLlama(CustomLLM):
    """A LlamaIndex completion LLM answering ``answer``; ``raw`` is the provider response it carries."""

    answer: str
    raw: dict[str, Any] | None = None
    max_tokens: int | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-llama", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer, raw=self.raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


class ThinkingLlama(ScriptedLlama):
    """A LlamaIndex chat LLM whose reply holds a ThinkingBlock (and ``answer`` as text, when not empty)."""

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        blocks: list[Any] = [ThinkingBlock(content="The user wants a ranking. Passage [1] ...")]
        if self.answer:
            blocks.append(TextBlock(text=self.answer))
        return ChatResponse(message=ChatMessage(role="assistant", blocks=blocks), raw=self.raw)


class IncomingOrder:
    """A stand-in first stage for the adapters: keeps the incoming order (raw score = -position)."""

    identity = "incoming-order"

    def describe(self) -> ScorerInfo:
        return ScorerInfo(kind="cross-encoder", model="incoming-order", backend="python", max_length=None)

    def score(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        n = len(texts)
        return Scored(raw=-np.arange(n, dtype=np.float64), windows=[1] * n, truncated=[False] * n)

    async def ascore(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        return self.score(query, texts, settings)


# --------------------------------------------------------------------------- the OpenAI-compatible server


class ChatServer:
    """A loopback server answering ``/v1/chat/completions`` with ``self.reply(body)``: the choice's
    message and finish_reason, in the OpenAI chat-completions format; requests are recorded."""

    def __init__(self) -> None:
        self.reply: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: {"content": ""}
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                r = dict(outer.reply(body))
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", **{k: v for k, v in r.items() if k != "finish_reason"}},
                    "finish_reason": r.get("finish_reason", "stop"),
                }
                data = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body.get("model", "m"),
                        "choices": [choice],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    s = ChatServer()
    yield s
    s.close()


# --------------------------------------------------------------------------- every shape, every path

HTTP_HOW = "LLMScorer(max_completion_tokens=...), llm_kwargs={'max_completion_tokens': ...}"
IDS = [s.name for s in SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_parser(shape: Shape) -> None:
    p = parse_permutation(shape.answer, 6)
    if shape.order is None:
        assert not p.ok and p.order == tuple(range(6))
    else:
        assert p.order == tuple(_order(shape.order)) and p.ok
        assert (len(p.missing), p.duplicates, p.unknown) == (shape.missing, shape.duplicates, shape.unknown)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_langchain_chat_model(shape: Shape) -> None:
    how = "the LangChain model's own max tokens setting"
    check(lambda strict: LLMScorer(ScriptedChat(answer=shape.answer), strict=strict), shape, "max_tokens", how)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_llama_index_llm(shape: Shape) -> None:
    how = "the LlamaIndex model's own max tokens setting"
    llm = ScriptedLlama(answer=shape.answer, max_tokens=256)
    check(lambda strict: LLMScorer(llm, strict=strict), shape, "max_tokens=256", how)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_openai_compatible_http(server: ChatServer, shape: Shape) -> None:
    server.reply = lambda body: {"content": shape.answer}
    budget = f"max_tokens={6 * 6 + 32 + THINKING_TOKENS}"
    check(lambda strict: LLMScorer(server.url, model="m", strict=strict), shape, budget, HTTP_HOW)


class Events(BaseCallbackHandler):
    """Keeps the crossrank_rerank events a LangChain run fires."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        self.events.append(data)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_langchain_compressor(shape: Shape) -> None:
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(DOCS)]

    def compressor(strict: bool) -> CrossRankCompressor:
        return CrossRankCompressor(
            reranker=Reranker(IncomingOrder()),
            llm=ScriptedChat(answer=shape.answer),
            llm_top_k=6,
            top_n=6,
            llm_kwargs={"strict": strict},
        )

    events = Events()
    out = compressor(False).compress_documents(docs, QUERY, callbacks=[events])
    got = [int(d.id or -1) for d in out]
    failures = events.events[0]["stats"]["scorer"]["stages"][-1]["scorer"]["failures"]
    if shape.order is not None:
        assert got == _order(shape.order) and failures == []
        return
    assert got == list(range(6)) and [f["reason"] for f in failures] == [
        _reason(shape, "max_tokens", "the LangChain model's own max tokens setting")
    ]
    with pytest.raises(LLMError, match=NO_RANKING):
        compressor(True).compress_documents(docs, QUERY)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_llama_index_postprocessor(shape: Shape) -> None:
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCS)]

    def rerank(strict: bool) -> CrossRankRerank:
        return CrossRankRerank(
            reranker=Reranker(IncomingOrder()),
            llm=ScriptedLlama(answer=shape.answer),
            llm_top_k=6,
            top_n=6,
            llm_kwargs={"strict": strict},
        )

    got = [int(n.node.node_id) for n in rerank(False).postprocess_nodes(nodes, query_str=QUERY)]
    if shape.order is not None:
        assert got == _order(shape.order)
        return
    assert got == list(range(6))  # the cross-encoder's order stands
    with pytest.raises(LLMError, match=NO_RANKING):
        rerank(True).postprocess_nodes(nodes, query_str=QUERY)


# --------------------------------------------------------------------------- answers cut off by the budget

THINKING = "<think>\nOkay, let me look at each passage. Passage [1] talks about aspirin and"


def test_http_finish_reason_length_while_thinking_is_reported_with_the_budget(server: ChatServer) -> None:
    budget = 6 * 6 + 32 + THINKING_TOKENS
    cut = f"{NO_RANKING}: the answer was cut off by the completion budget (max_tokens={budget})"
    thinking = f"{cut} while thinking; raise max_tokens ({HTTP_HOW})"
    cases = [
        ({"content": THINKING, "finish_reason": "length"}, thinking),
        # vLLM / llama.cpp with a reasoning parser: the thinking comes apart from an empty answer
        ({"content": None, "reasoning_content": "Okay, passage [1] ...", "finish_reason": "length"}, thinking),
        ({"content": "", "reasoning": "Okay, passage [1] ...", "finish_reason": "length"}, thinking),  # Ollama
        # cut off while explaining, before any ranking
        (
            {"content": "Passage [3] mentions the topic but", "finish_reason": "length"},
            f"{cut}; raise max_tokens ({HTTP_HOW})",
        ),
    ]
    for reply, reason in cases:
        server.reply = lambda body, reply=reply: reply  # type: ignore[misc]
        s = LLMScorer(server.url, model="m").score(QUERY, DOCS, ScoreSettings())
        assert s.raw.tolist() == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
        assert [f["reason"] for f in s.details["failures"]] == [reason]
        assert s.details["cut_off_answers"] == 1
        assert server.bodies[-1]["max_tokens"] == budget
        with pytest.raises(LLMError, match=re.escape(reason)):
            LLMScorer(server.url, model="m", strict=True).score(QUERY, DOCS, ScoreSettings())


def test_http_cut_off_ranking_keeps_what_was_complete(server: ChatServer) -> None:
    """A ranking cut off mid-way is used as far as it goes; a bare number at the cut may be cut short (1 of 12)."""
    server.reply = lambda body: {"content": "[2] > [4] > [5] > [1", "finish_reason": "length"}
    s = LLMScorer(server.url, model="m", max_completion_tokens=12).score(QUERY, DOCS, ScoreSettings())
    d = s.details
    assert sorted(range(6), key=lambda i: -s.raw[i]) == [1, 3, 4, 0, 2, 5]
    assert (d["failures"], d["missing_ids"], d["cut_off_answers"]) == ([], 3, 1)
    assert server.bodies[-1]["max_tokens"] == 12  # an explicit budget is sent as it is

    server.reply = lambda body: {"content": "2 > 4 > 5 > 1", "finish_reason": "length"}
    s = LLMScorer(server.url, model="m").score(QUERY, DOCS, ScoreSettings())
    assert s.details["missing_ids"] == 3  # the trailing "1" is not taken
    server.reply = lambda body: {"content": "2 > 4 > 5 > 1", "finish_reason": "stop"}
    s = LLMScorer(server.url, model="m").score(QUERY, DOCS, ScoreSettings())
    assert s.details["missing_ids"] == 2 and s.details["cut_off_answers"] == 0


def test_http_pointwise_cut_off_while_thinking(server: ChatServer) -> None:
    server.reply = lambda body: {"content": "<think>The passage mentions 7 trials", "finish_reason": "length"}
    s = LLMScorer(server.url, model="m", mode="pointwise", logprobs=False).score(QUERY, DOCS[:2], ScoreSettings())
    reasons = {f["reason"] for f in s.details["failures"]}
    budget = server.bodies[-1]["max_tokens"]
    assert reasons == {
        f"no usable rating in the answer: the answer was cut off by the completion budget (max_tokens={budget}) "
        f"while thinking; raise max_tokens ({HTTP_HOW})"
    }
    assert s.raw.tolist() == [-1.0, -1.0] and s.details["cut_off_answers"] == 2  # not the 7 from the reasoning


@pytest.mark.parametrize(
    ("message", "model_budget", "budget"),
    [
        (AIMessage(content=THINKING, response_metadata={"finish_reason": "length"}), 300, "max_tokens=300"),  # OpenAI
        (  # Anthropic: thinking blocks apart from the text, stop_reason max_tokens
            AIMessage(
                content=[{"type": "thinking", "thinking": "Passage [1] ..."}],
                response_metadata={"stop_reason": "max_tokens"},
            ),
            1024,
            "max_tokens=1024",
        ),
        (  # DeepSeek: reasoning_content apart from an empty answer
            AIMessage(
                content="",
                additional_kwargs={"reasoning_content": "Hmm"},
                response_metadata={"finish_reason": "length"},
            ),
            None,
            "max_tokens",
        ),
        (AIMessage(content=THINKING, response_metadata={"done_reason": "length"}), None, "max_tokens"),  # Ollama
        (AIMessage(content=THINKING), None, "max_tokens"),  # no finish reason: the unclosed <think> says it
    ],
)
def test_langchain_cut_off_while_thinking(message: AIMessage, model_budget: int | None, budget: str) -> None:
    llm = ScriptedChat(answer=message, max_tokens=model_budget)
    s = LLMScorer(llm).score(QUERY, DOCS, ScoreSettings())
    reason = (
        f"{NO_RANKING}: the answer was cut off by the completion budget ({budget}) while thinking; "
        "raise max_tokens (the LangChain model's own max tokens setting)"
    )
    assert [f["reason"] for f in s.details["failures"]] == [reason] and s.details["cut_off_answers"] == 1
    with pytest.raises(LLMError, match=re.escape(reason)):
        LLMScorer(llm, strict=True).score(QUERY, DOCS, ScoreSettings())


def test_langchain_string_llm_finish_reason() -> None:
    llm = ScriptedStringLLM(answer="Passage [2] is clearly", info={"finish_reason": "length"})
    s = LLMScorer(llm).score(QUERY, DOCS, ScoreSettings())
    assert [f["reason"] for f in s.details["failures"]] == [
        f"{NO_RANKING}: the answer was cut off by the completion budget (max_tokens); "
        "raise max_tokens (the LangChain model's own max tokens setting)"
    ]
    ok = LLMScorer(ScriptedStringLLM(answer=CHAIN, info={"finish_reason": "stop"})).score(QUERY, DOCS, ScoreSettings())
    assert ok.details["failures"] == [] and sorted(range(6), key=lambda i: -ok.raw[i]) == _order(tuple(BEST))


@pytest.mark.parametrize(
    ("llm", "budget"),
    [
        (
            ScriptedLlama(answer=THINKING, raw={"choices": [{"finish_reason": "length"}]}, max_tokens=512),
            "max_tokens=512",
        ),
        (ScriptedLlama(answer=THINKING, raw={"done_reason": "length"}), "max_tokens"),  # Ollama's raw response
        (ThinkingLlama(answer="", raw={"stop_reason": "max_tokens"}, max_tokens=64), "max_tokens=64"),  # ThinkingBlock
    ],
)
def test_llama_index_cut_off_while_thinking(llm: ScriptedLlama, budget: str) -> None:
    s = LLMScorer(llm).score(QUERY, DOCS, ScoreSettings())
    reason = (
        f"{NO_RANKING}: the answer was cut off by the completion budget ({budget}) while thinking; "
        "raise max_tokens (the LlamaIndex model's own max tokens setting)"
    )
    assert [f["reason"] for f in s.details["failures"]] == [reason] and s.details["cut_off_answers"] == 1
    with pytest.raises(LLMError, match=re.escape(reason)):
        LLMScorer(llm, strict=True).score(QUERY, DOCS, ScoreSettings())


def test_llama_index_thinking_block_then_answer() -> None:
    s = LLMScorer(ThinkingLlama(answer=CHAIN, raw={"stop_reason": "end_turn"})).score(QUERY, DOCS, ScoreSettings())
    assert s.details["failures"] == [] and s.details["cut_off_answers"] == 0
    assert sorted(range(6), key=lambda i: -s.raw[i]) == _order(tuple(BEST))


# --------------------------------------------------------------------------- the default completion budget


def test_default_budget_leaves_room_to_think_within_an_8k_context(server: ChatServer) -> None:
    assert default_completion_tokens(92, 500) == 92 + THINKING_TOKENS
    assert default_completion_tokens(92, 4048) == CONTEXT_TOKENS - 4453  # the README's top-10 prompt size
    assert default_completion_tokens(92, 9000) == 92  # a prompt past the context: the answer's size only
    # The README's setup: the LLM reorders the cross-encoder's top 10 SciFact-sized abstracts (~370 tokens each).
    docs = [f"abstract {i}: " + "word " * 360 for i in range(10)]
    server.reply = lambda body: {"content": "[3] > [1]"}
    scorer = LLMScorer(server.url, model="m")
    scorer.score(QUERY, docs, ScoreSettings())
    sent = server.bodies[-1]["max_tokens"]
    assert sent >= 3000  # room for a thinking model's reasoning before its answer
    estimate = sum(scorer.count(m["content"]) for m in server.bodies[-1]["messages"])
    assert estimate > 3500 and math.ceil(estimate * 1.1) + sent == CONTEXT_TOKENS


def test_cli_llm_budget_flag_and_cut_off_report(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crossrank import Candidate
    from crossrank.cli import common, main

    class Pipeline:
        reranker = Reranker(IncomingOrder())
        embedder_runtime = "none: the candidates are given"

        def retrieve(self, query: str, **kw: Any) -> list[tuple[Candidate, float]]:
            return [(Candidate(text=t, id=f"d{i}"), 0.1 * i) for i, t in enumerate(DOCS)]

    monkeypatch.setattr(common, "pipeline", lambda *a, **k: Pipeline())
    server.reply = lambda body: {"content": THINKING, "finish_reason": "length"}
    args = ["query", QUERY, "--llm", server.url, "--llm-model", "m", "--llm-top-k", "6"]
    assert main([*args, "--llm-max-tokens", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert server.bodies[-1]["max_tokens"] == 50
    reason = f"{NO_RANKING}: the answer was cut off by the completion budget (max_tokens=50) while thinking"
    assert [f["reason"].split(";")[0] for f in out["llm"]["failures"]] == [reason]
    assert [h["id"] for h in out["hits"]] == [f"d{i}" for i in range(6)]  # the cross-encoder's order stands
    assert main(args) == 0
    assert f"1 prompt(s) failed (kept the cross-encoder order there) - {NO_RANKING}: the answer was cut off" in (
        capsys.readouterr().out
    )
    assert server.bodies[-1]["max_tokens"] == 6 * 6 + 32 + THINKING_TOKENS
