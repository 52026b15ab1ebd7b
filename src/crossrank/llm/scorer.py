"""``LLMScorer``: rerank with the user's LLM, pointwise (ratings) or listwise (RankGPT windows).

Both modes go through the :class:`~crossrank.scoring.Scorer` protocol, so ``Reranker(LLMScorer(llm))``
and :class:`~crossrank.cascade.Cascade` stages rank, filter and report exactly like a cross-encoder.

**Pointwise**: one prompt per ``batch_size`` candidates (default 1) asks for a rating on
``scale`` (default 0-10); the raw score is the rating. With one candidate per prompt and an LLM
that returns token log-probabilities, the raw score is the *expected* rating over the rating
tokens (finer than the argmax, and fewer ties). Prompts run concurrently, at most
``max_concurrency`` at a time.

**Listwise**: RankGPT-style sliding windows of ``window`` candidates moved by ``step`` from the
back of the list to the front, so strong candidates bubble up; each prompt asks for a permutation
(``[2] > [1] > ...``). Windows run one after another (each depends on the previous). Listwise
gives an order, not scores: the raw score is synthetic, ``n - position`` for ``n`` candidates
(best = n, worst = 1; ``ScorerInfo.scale == "rank"``), so ``normalize="minmax"`` maps it onto
[0, 1] and thresholds are on positions, not on relevance.

**Reading answers** (:mod:`crossrank.llm.parsing`): a listwise answer's ranking is the explicit
ranking it states (a ``>`` chain, a "ranking:" / "final" line, a numbered list, a JSON array, a
markdown table...), the last complete one; reasoning blocks are skipped, and a number in prose is
never taken for an id, so a refusal ("I can't rank these 10 passages") is a failure, not ``[10]``.

**Thinking models**: unless ``max_completion_tokens`` is set, each request's completion budget is
the answer's size plus :data:`THINKING_TOKENS` for a model that reasons first, capped so prompt
and completion fit a :data:`CONTEXT_TOKENS` context (vLLM and TGI reject a request that does not
fit the model's context). It is a cap, not a cost: a model that answers at once stops there. An
answer cut off by the budget (``finish_reason == "length"`` or the frameworks' equivalents, or an
unclosed ``<think>`` block) is reported as such: "the answer was cut off by the completion budget
(max_tokens=N) while thinking; raise max_tokens".

**Failures never lose the ranking** (unless ``strict=True``): a prompt whose call fails after
``retries`` (transient errors: timeouts, connection errors, rate limits, 5xx), times out, is over
the call budget or gets an unusable answer (no ranking, a refusal, empty, cut off) keeps the
incoming order for its window (listwise) or gives its candidates the score ``scale[0] - 1``, below
every rating, so they follow the rated ones in incoming order (pointwise). Every such prompt is
listed in ``failures``. Ids missing from a listwise answer keep their previous order after the
listed ones (or where the ranking left a ``...`` gap); duplicate and unknown ids are ignored; all
three are counted.

Every call reports, in ``Scored.details`` (``RerankStats.scorer`` through the Reranker): ``mode``,
``model``, ``backend``, ``prompts`` (planned), ``llm_calls`` (requests sent, retries included),
``retries``, ``prompt_tokens`` / ``completion_tokens`` (the LLM's usage where it reports it,
else estimated; ``tokens_estimated`` counts the requests estimated), ``failures`` (``where``:
``{"window": [start, end]}`` positions in the incoming order, or ``{"candidates": [...]}``;
``reason``; ``answer``: the start of an unusable answer), ``missing_ids``, ``duplicate_ids``,
``unknown_ids``, ``trimmed_documents``, ``cut_off_answers`` (answers that hit the completion budget,
used or not), ``llm_ms``; pointwise also ``rated_by_logprobs`` and
``unrated`` (candidates left with the fallback score). Candidate numbers are 0-based positions in
the texts the scorer was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import math
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from crossrank.errors import InvalidArgumentError
from crossrank.llm.clients import LLMClient, LLMError, LLMReply, as_client, is_transient
from crossrank.llm.parsing import answer_problem, expected_rating, parse_permutation, parse_ratings
from crossrank.llm.prompts import LLMPrompts, Prompt, TokenCounter, approx_tokens, render
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings, ScoreStats

T = TypeVar("T")
MODES = ("listwise", "pointwise")
_ANSWER_CHARS = 200
THINKING_TOKENS = 4096  # room in the default completion budget for a model that reasons before it answers
CONTEXT_TOKENS = 8192  # the default budget keeps prompt + completion within a context this size
_FRAMEWORKS = {"langchain": "LangChain", "llama-index": "LlamaIndex"}


def default_completion_tokens(answer_tokens: int, prompt_tokens: int) -> int:
    """The completion budget sent when ``max_completion_tokens`` is not set.

    ``answer_tokens`` (the answer itself) plus :data:`THINKING_TOKENS`, capped so the prompt (its
    estimate plus 10%, as estimates undercount) and the completion fit :data:`CONTEXT_TOKENS`,
    and never below ``answer_tokens``.
    """
    room = CONTEXT_TOKENS - math.ceil(prompt_tokens * 1.1)
    return max(answer_tokens, min(answer_tokens + THINKING_TOKENS, room))


def plan_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """Sliding windows ``[start, end)`` over ``n`` positions, back to front, the last one starting at 0.

    100 candidates, window 20, step 10: 9 windows (80-100, 70-90, ..., 0-20). Unlike the original
    RankGPT loop, the front of a list whose length is not a multiple of ``step`` is never skipped.
    """
    if n <= 1:
        return []
    out = []
    end = n
    while True:
        start = max(end - window, 0)
        out.append((start, end))
        if start == 0:
            return out
        end -= step


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = ctx.run(asyncio.run, coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="crossrank-llm-sync")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


@dataclass
class _Run:
    """One scoring call's budget and counters."""

    max_calls: int | None
    deadline: float | None
    prompts: int = 0
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: int = 0
    missing: int = 0
    duplicates: int = 0
    unknown: int = 0
    cut_off: int = 0
    by_logprobs: int = 0
    llm_s: float = 0.0
    trimmed: set[int] = field(default_factory=set)
    failures: list[dict[str, Any]] = field(default_factory=list)
    unrated: list[int] = field(default_factory=list)

    def remaining_s(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def take_call(self) -> bool:
        if self.max_calls is not None and self.calls >= self.max_calls:
            return False
        self.calls += 1
        return True


class LLMScorer:
    """Score candidates with an LLM: ``pointwise`` ratings or a ``listwise`` order (see the module docs).

    ``llm``: a LangChain chat model / LLM, a LlamaIndex LLM, an OpenAI-compatible URL (with
    ``model`` / ``api_key``) or an :class:`~crossrank.llm.LLMClient`.

    Options: ``window`` / ``step`` (listwise), ``batch_size`` (pointwise candidates per prompt),
    ``scale`` (pointwise rating range), ``logprobs`` (use token log-probabilities for the expected
    rating when the LLM returns them), ``prompts`` (:class:`~crossrank.llm.LLMPrompts`) and
    ``instruction``. Budget per scoring call: ``max_calls`` (requests, retries included),
    ``max_prompt_tokens`` (per request; passages are trimmed to fit), ``max_completion_tokens``
    (sent to HTTP servers; default :func:`default_completion_tokens`: the answer's size plus room
    to think first), ``timeout_s`` (per request; the default leaves a thinking model time to think),
    ``total_timeout_s`` (whole call), ``max_concurrency`` (pointwise requests in flight),
    ``retries`` / ``retry_backoff_s`` (transient errors, exponential backoff). ``count_tokens``
    (``str -> int``) replaces the token estimate used for the budget. ``strict=True`` raises
    :class:`~crossrank.llm.LLMError` on the first failed or unusable prompt instead of degrading.
    """

    def __init__(
        self,
        llm: Any,
        *,
        mode: str = "listwise",
        model: str | None = None,
        api_key: str | None = None,
        window: int = 20,
        step: int = 10,
        batch_size: int = 1,
        scale: tuple[int, int] = (0, 10),
        logprobs: bool = True,
        prompts: LLMPrompts | None = None,
        instruction: str | None = None,
        max_calls: int | None = None,
        max_prompt_tokens: int | None = 4096,
        max_completion_tokens: int | None = None,
        timeout_s: float | None = 180.0,
        total_timeout_s: float | None = None,
        max_concurrency: int = 4,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        count_tokens: TokenCounter | None = None,
        strict: bool = False,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.client: LLMClient = as_client(llm, model=model, api_key=api_key)
        self.mode = mode
        self.window = _int_at_least("window", window, 2)
        self.step = _int_at_least("step", step, 1)
        if self.step > self.window:
            raise InvalidArgumentError(f"step ({step}) must not exceed window ({window}), or candidates are skipped")
        self.batch_size = _int_at_least("batch_size", batch_size, 1)
        if (
            not isinstance(scale, (tuple, list))
            or len(scale) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in scale)
            or scale[0] >= scale[1]
        ):
            raise InvalidArgumentError(f"scale must be two ints (low, high) with low < high, got {scale!r}")
        self.scale = (int(scale[0]), int(scale[1]))
        self.logprobs = bool(logprobs)
        self.prompts = prompts or LLMPrompts()
        self.instruction = self.prompts.instruction if instruction is None else instruction
        self.max_calls = None if max_calls is None else _int_at_least("max_calls", max_calls, 1)
        self.max_prompt_tokens = (
            None if max_prompt_tokens is None else _int_at_least("max_prompt_tokens", max_prompt_tokens, 1)
        )
        self.max_completion_tokens = (
            None if max_completion_tokens is None else _int_at_least("max_completion_tokens", max_completion_tokens, 1)
        )
        self.timeout_s = _positive_or_none("timeout_s", timeout_s)
        self.total_timeout_s = _positive_or_none("total_timeout_s", total_timeout_s)
        self.max_concurrency = _int_at_least("max_concurrency", max_concurrency, 1)
        self.retries = _int_at_least("retries", retries, 0)
        if not isinstance(retry_backoff_s, (int, float)) or retry_backoff_s < 0:
            raise InvalidArgumentError(f"retry_backoff_s must be >= 0, got {retry_backoff_s!r}")
        self.retry_backoff_s = float(retry_backoff_s)
        self.count: TokenCounter = count_tokens or approx_tokens
        self.strict = bool(strict)

    # ------------------------------------------------------------------ the Scorer protocol
    @property
    def identity(self) -> str:
        """Changes with the LLM, the mode and everything that shapes the prompts."""
        key = repr(
            (
                self.client.backend,
                self.client.model_name,
                self.mode,
                self.window,
                self.step,
                self.batch_size,
                self.scale,
                self.logprobs,
                self.prompts,
                self.instruction,
                self.max_prompt_tokens,
            )
        )
        return f"llm-{self.mode}:{self.client.model_name}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def describe(self) -> ScorerInfo:
        return ScorerInfo(
            kind=f"llm-{self.mode}",
            model=self.client.model_name,
            backend=self.client.backend,
            max_length=self.max_prompt_tokens,
            scale="rank" if self.mode == "listwise" else "rating",
        )

    def __repr__(self) -> str:
        return f"LLMScorer({self.client.model_name!r}, mode={self.mode!r}, backend={self.client.backend!r})"

    def score(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        """Scores for ``texts`` (see the module docs for what they mean in each mode)."""
        return run_sync(self.ascore(query, texts, settings))

    async def ascore(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        """Async :meth:`score`; framework LLMs run on worker threads, HTTP calls on the event loop."""
        n = len(texts)
        deadline = None if self.total_timeout_s is None else time.monotonic() + self.total_timeout_s
        run = _Run(max_calls=self.max_calls, deadline=deadline)
        t0 = time.perf_counter()
        session = getattr(self.client, "session", None)
        async with session() if callable(session) else contextlib.nullcontext():
            if self.mode == "listwise":
                raw = await self._listwise(run, query, texts)
            else:
                raw = await self._pointwise(run, query, texts)
        return Scored(
            raw=np.asarray(raw, dtype=np.float64),
            windows=[1] * n,
            truncated=[i in run.trimmed for i in range(n)],
            stats=ScoreStats(pairs=n, model_s=time.perf_counter() - t0),
            details=self._report(run),
        )

    # ------------------------------------------------------------------ listwise
    async def _listwise(self, run: _Run, query: str, texts: Sequence[str]) -> list[float]:
        n = len(texts)
        order = list(range(n))
        windows = plan_windows(n, self.window, self.step)
        run.prompts = len(windows)
        for start, end in windows:
            sub = order[start:end]
            where = {"window": [start, end]}
            prompt = self._render(run, self.prompts.listwise, query, texts, sub)
            budget = default_completion_tokens(6 * len(sub) + 32, prompt.tokens)
            reply = await self._call(run, prompt, where, max_tokens=budget, top_logprobs=0)
            if reply is None:
                continue
            perm = parse_permutation(reply.text, len(sub), cut_off=reply.cut_off)
            run.duplicates += perm.duplicates
            run.unknown += perm.unknown
            run.cut_off += reply.cut_off or perm.problem == "thinking"
            if not perm.ok:
                self._fail(run, where, self._unusable("ranking", reply, perm.problem), reply.text)
                continue
            run.missing += len(perm.missing)
            order[start:end] = [sub[i] for i in perm.order]
        raw = [0.0] * n
        for pos, i in enumerate(order):
            raw[i] = float(n - pos)
        return raw

    # ------------------------------------------------------------------ pointwise
    async def _pointwise(self, run: _Run, query: str, texts: Sequence[str]) -> list[float]:
        n = len(texts)
        groups = [list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size)]
        run.prompts = len(groups)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def rate(group: list[int]) -> dict[int, float]:
            async with gate:
                return await self._rate(run, query, texts, group)

        tasks = [asyncio.ensure_future(rate(g)) for g in groups]
        try:
            found = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # strict mode (or cancellation): stop the prompts still in flight
                task.cancel()
            raise
        raw = [float(self.scale[0] - 1)] * n
        for ratings in found:
            for i, x in ratings.items():
                raw[i] = x
        run.unrated = [i for i in range(n) if not any(i in r for r in found)]
        return raw

    async def _rate(self, run: _Run, query: str, texts: Sequence[str], group: list[int]) -> dict[int, float]:
        where = {"candidates": list(group)}
        prompt = self._render(run, self.prompts.pointwise, query, texts, group)
        want_logprobs = self.logprobs and len(group) == 1
        top = self.scale[1] - self.scale[0] + 1 if want_logprobs else 0
        budget = default_completion_tokens(8 * len(group) + 16, prompt.tokens)
        reply = await self._call(run, prompt, where, max_tokens=budget, top_logprobs=top)
        if reply is None:
            return {}
        problem = answer_problem(reply.text)
        run.cut_off += reply.cut_off or problem == "thinking"
        parsed = parse_ratings(reply.text, len(group), self.scale)
        run.duplicates += parsed.duplicates
        run.unknown += parsed.unknown
        out = {group[j]: x for j, x in parsed.ratings.items()}
        if want_logprobs and reply.top_logprobs:
            expected = expected_rating(reply.top_logprobs, self.scale)
            if expected is not None:
                out[group[0]] = expected
                run.by_logprobs += 1
        if not out:
            self._fail(run, where, self._unusable("rating", reply, problem), reply.text)
        else:
            run.missing += len(group) - len(out)
        return out

    # ------------------------------------------------------------------ shared
    def _render(self, run: _Run, template: str, query: str, texts: Sequence[str], ids: list[int]) -> Prompt:
        prompt = render(
            self.prompts,
            template,
            query=query,
            texts=[texts[i] for i in ids],
            instruction=self.instruction,
            scale=self.scale,
            max_prompt_tokens=self.max_prompt_tokens,
            count=self.count,
        )
        run.trimmed.update(i for i, cut in zip(ids, prompt.trimmed) if cut)
        return prompt

    async def _call(
        self, run: _Run, prompt: Prompt, where: dict[str, Any], *, max_tokens: int, top_logprobs: int
    ) -> LLMReply | None:
        """One prompt with retries, inside the budget; None (failure recorded) when it yields no reply."""
        error = ""
        for attempt in range(self.retries + 1):
            left = run.remaining_s()
            if left <= 0:
                self._fail(run, where, "total_timeout_s reached before the request")
                return None
            if not run.take_call():
                self._fail(run, where, f"max_calls ({self.max_calls}) reached")
                return None
            timeout = min(self.timeout_s or math.inf, left)
            t = time.perf_counter()
            try:
                reply = await asyncio.wait_for(
                    self.client.achat(
                        prompt.messages, max_tokens=self.max_completion_tokens or max_tokens, top_logprobs=top_logprobs
                    ),
                    timeout=None if math.isinf(timeout) else timeout,
                )
            except (asyncio.TimeoutError, TimeoutError):
                error, transient = f"timed out after {timeout:.3g} s", True
            except Exception as exc:
                error, transient = f"{type(exc).__name__}: {exc}"[:300], is_transient(exc)
            else:
                self._account(run, prompt, reply)
                return reply
            finally:
                run.llm_s += time.perf_counter() - t
            if not transient or attempt == self.retries:
                break
            run.retries += 1
            await asyncio.sleep(min(self.retry_backoff_s * 2**attempt, max(run.remaining_s(), 0.0)))
        self._fail(run, where, error)
        return None

    def _account(self, run: _Run, prompt: Prompt, reply: LLMReply) -> None:
        if reply.prompt_tokens is None or reply.completion_tokens is None:
            run.estimated += 1
        run.prompt_tokens += prompt.tokens if reply.prompt_tokens is None else reply.prompt_tokens
        run.completion_tokens += self.count(reply.text) if reply.completion_tokens is None else reply.completion_tokens

    def _unusable(self, what: str, reply: LLMReply, problem: str | None) -> str:
        """Why an answer gave no usable ranking / rating, saying what to change where that is known."""
        base = f"no usable {what} in the answer"
        thinking = problem == "thinking" or (bool(reply.reasoning) and problem == "empty")
        if reply.cut_off or problem == "thinking":
            budget = "max_tokens" if reply.max_tokens is None else f"max_tokens={reply.max_tokens}"
            framework = _FRAMEWORKS.get(self.client.backend)
            how = (
                f"the {framework} model's own max tokens setting"
                if framework
                else "LLMScorer(max_completion_tokens=...), llm_kwargs={'max_completion_tokens': ...}"
            )
            return (
                f"{base}: the answer was cut off by the completion budget ({budget})"
                f"{' while thinking' if thinking else ''}; raise max_tokens ({how})"
            )
        if problem == "refusal":
            return f"{base}: the LLM declined"
        if problem == "empty":
            return f"{base}: the answer was empty" + (" after the reasoning" if reply.reasoning or reply.text else "")
        return base

    def _fail(self, run: _Run, where: dict[str, Any], reason: str, answer: str | None = None) -> None:
        entry: dict[str, Any] = {"where": where, "reason": reason}
        if answer is not None:
            entry["answer"] = answer[:_ANSWER_CHARS]
        run.failures.append(entry)
        if self.strict:
            raise LLMError(f"LLM {self.mode} prompt for {where} failed: {reason}")

    def _report(self, run: _Run) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "model": self.client.model_name,
            "backend": self.client.backend,
            "prompts": run.prompts,
            "llm_calls": run.calls,
            "retries": run.retries,
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "tokens_estimated": run.estimated,
            "failures": run.failures,
            "missing_ids": run.missing,
            "duplicate_ids": run.duplicates,
            "unknown_ids": run.unknown,
            "trimmed_documents": len(run.trimmed),
            "cut_off_answers": run.cut_off,
            "llm_ms": run.llm_s * 1000,
        }
        if self.mode == "pointwise":
            out["rated_by_logprobs"] = run.by_logprobs
            out["unrated"] = run.unrated
        return out


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _positive_or_none(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgumentError(f"{name} must be a number of seconds > 0 or None, got {value!r}")
    return float(value)
