"""One small async interface over the LLMs users already have: LangChain, LlamaIndex, OpenAI-compatible HTTP.

:func:`as_client` turns what the user passes into an :class:`LLMClient`:

- a LangChain chat model (``BaseChatModel``) or any other ``BaseLanguageModel`` (string LLMs);
- a LlamaIndex ``LLM`` (chat or completion);
- a URL of an OpenAI-compatible server (vLLM, llama.cpp ``llama-server``, Ollama, TGI, LM Studio,
  ...): ``http://host:port``, ``.../v1`` or ``.../v1/chat/completions``, called with httpx;
- any object already implementing :class:`LLMClient`.

Framework LLMs are called through their synchronous API on a daemon thread per request: that
works for every model (sync-only custom ones included), never blocks the event loop, and lets a
timeout abandon a hung call instead of waiting for it. The framework model's own settings
(temperature, max tokens, logprobs) apply; token log-probabilities are read when the response
carries them (e.g. ``ChatOpenAI(logprobs=True, top_logprobs=10)``). The HTTP client asks for
``temperature=0``, ``max_tokens`` and, when wanted, ``logprobs`` itself.

Every reply also says why generation stopped where the LLM tells (``finish_reason``: OpenAI's
``length``, Anthropic's and Bedrock's ``max_tokens``, Gemini's ``MAX_TOKENS``, Ollama's
``done_reason``), the reasoning a server returned apart from the answer (vLLM / llama.cpp
``reasoning_content``, Ollama ``reasoning``, LangChain thinking blocks, LlamaIndex
``ThinkingBlock``) and the completion budget that applied, so an answer cut off while the model
was still thinking is reported as such rather than as nonsense.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from crossrank.errors import CrossrankError, InvalidArgumentError, missing_extra
from crossrank.llm.parsing import TopLogprobs
from crossrank.llm.prompts import Messages

T = TypeVar("T")

# Exception names (of any framework or SDK) that mean "try again": rate limits, timeouts, overload.
_TRANSIENT_NAMES = ("timeout", "ratelimit", "rate_limit", "connection", "unavailable", "overloaded", "tryagain")
_TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Finish reasons (lower-cased) meaning "the completion budget ran out": OpenAI-compatible servers, TGI, Ollama
# ("length"), Anthropic / Bedrock ("max_tokens"), Gemini ("MAX_TOKENS"), Responses-style APIs.
CUT_OFF_REASONS = frozenset({"length", "max_tokens", "max_output_tokens", "max_new_tokens", "model_length"})
_FINISH_KEYS = ("finish_reason", "stop_reason", "done_reason", "stopReason")
# Where framework models keep their completion budget.
_BUDGET_ATTRS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens", "num_predict")


class LLMError(CrossrankError, RuntimeError):
    """An LLM call failed or answered something unusable (raised only with ``strict=True``)."""


class LLMCallError(LLMError):
    """One request to the LLM failed; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class LLMReply:
    """What one LLM request returned.

    Token counts are None when the LLM did not report them; ``top_logprobs`` has one entry per
    generated token (the generated token first, then the alternatives) when it reported them.
    ``finish_reason`` is why generation stopped, as the LLM said it (None: not said);
    ``reasoning`` the reasoning text a server returned apart from the answer (not parsed);
    ``max_tokens`` the completion budget that applied, where known.
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    top_logprobs: TopLogprobs | None = None
    finish_reason: str | None = None
    reasoning: str | None = None
    max_tokens: int | None = None

    @property
    def cut_off(self) -> bool:
        """Whether the answer stopped because the completion budget ran out."""
        return self.finish_reason is not None and self.finish_reason.lower() in CUT_OFF_REASONS


@runtime_checkable
class LLMClient(Protocol):
    """What the LLM scorer needs from an LLM: one async chat call, and names for reports and cache keys."""

    @property
    def model_name(self) -> str:
        """The model, as reports should name it."""
        ...

    @property
    def backend(self) -> str:
        """How it is reached: ``openai-http``, ``langchain``, ``llama-index``, ..."""
        ...

    async def achat(self, messages: Messages, *, max_tokens: int, top_logprobs: int) -> LLMReply:
        """Answer ``messages`` ((role, content) pairs); ``top_logprobs > 0`` asks for log-probabilities."""
        ...


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth retrying: timeouts, connection errors, rate limits, 5xx."""
    if isinstance(exc, LLMCallError):
        return exc.transient
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and status in _TRANSIENT_STATUS:
        return True
    names = " ".join(c.__name__.lower() for c in type(exc).__mro__)
    return any(n in names for n in _TRANSIENT_NAMES)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a new daemon thread (with the caller's context vars) and await its result.

    Unlike the loop's default executor, an abandoned call (after a timeout) neither blocks
    ``asyncio.run`` from returning nor holds a pool slot that later calls wait for.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        ok, value = True, cast(Any, None)
        try:
            value = ctx.run(fn)
        except BaseException as exc:  # handed to the awaiting task, which decides
            ok, value = False, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: the caller gave up on this call
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=work, daemon=True, name="crossrank-llm").start()
    return await future


def _int(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _openai_logprobs(content: Any) -> list[list[tuple[str, float]]] | None:
    """OpenAI-style ``logprobs.content`` ([{token, logprob, top_logprobs: [...]}]) as alternatives per token."""
    if not isinstance(content, list) or not content:
        return None
    out: list[list[tuple[str, float]]] = []
    for item in content:
        if not isinstance(item, Mapping) or "token" not in item:
            return None
        alts = [(str(item["token"]), float(item.get("logprob", 0.0)))]
        for alt in item.get("top_logprobs") or []:
            if isinstance(alt, Mapping) and alt.get("token") != item["token"]:
                alts.append((str(alt.get("token", "")), float(alt.get("logprob", float("-inf")))))
        out.append(alts)
    return out


def _finish_reason(*sources: Any) -> str | None:
    """Why generation stopped, from the first source that says: a mapping or object with a finish /
    stop / done reason, directly or in its first ``choices`` entry (OpenAI objects and dicts)."""
    for src in sources:
        if src is None:
            continue
        for key in _FINISH_KEYS:
            value = src.get(key) if isinstance(src, Mapping) else getattr(src, key, None)
            if isinstance(value, str) and value:
                return value
            value = getattr(value, "value", None)  # enums (Gemini's FinishReason)
            if isinstance(value, str) and value:
                return value
        choices = src.get("choices") if isinstance(src, Mapping) else getattr(src, "choices", None)
        if isinstance(choices, Sequence) and not isinstance(choices, str) and choices:
            found = _finish_reason(choices[0])
            if found:
                return found
    return None


def _reasoning_text(*parts: Any) -> str | None:
    """Reasoning returned apart from the answer: strings, or content blocks of type thinking / reasoning."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, list):
            for block in part:
                if isinstance(block, Mapping) and block.get("type") in ("thinking", "reasoning", "redacted_thinking"):
                    text = block.get("thinking") or block.get("reasoning") or block.get("text") or block.get("summary")
                    out.append(text if isinstance(text, str) else "(reasoning)")
    text = "".join(out)
    return text or None


def _framework_budget(llm: Any) -> int | None:
    """The completion budget a framework model is set to, where it exposes one."""
    for attr in _BUDGET_ATTRS:
        value = getattr(llm, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _text_content(content: Any) -> str:
    """A message's text, whether a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") in (None, "text"):
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    return "" if content is None else str(content)


# --------------------------------------------------------------------------- OpenAI-compatible HTTP

_HTTP: contextvars.ContextVar[Any] = contextvars.ContextVar("crossrank_llm_http", default=None)


class OpenAICompatibleClient:
    """Chat completions over HTTP from any OpenAI-compatible server (``/v1/chat/completions``).

    ``model`` is the served model name; None asks the server's ``/v1/models`` once and uses the
    first one (llama.cpp ignores the name; vLLM and Ollama need it). ``api_key`` is sent as a
    bearer token when given. A server that rejects ``logprobs`` is remembered and asked without.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> None:
        url = base_url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"the LLM URL must start with http:// or https://, got {base_url!r}")
        if url.endswith("/chat/completions"):
            self.url = url
        elif url.endswith("/v1"):
            self.url = url + "/chat/completions"
        else:
            self.url = url + "/v1/chat/completions"
        self.models_url = self.url.rsplit("/chat/completions", 1)[0] + "/models"
        self._model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.headers.update(headers or {})
        self.extra_body = dict(extra_body or {})
        self.temperature = temperature
        self.logprobs_supported = True

    @property
    def model_name(self) -> str:
        return self._model or self.url

    @property
    def backend(self) -> str:
        return "openai-http"

    def __repr__(self) -> str:
        return f"OpenAICompatibleClient({self.url!r}, model={self._model!r})"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """One pooled HTTP connection set for every request of a scoring call."""
        httpx = _httpx()
        async with httpx.AsyncClient(timeout=None, headers=self.headers) as client:
            token = _HTTP.set(client)
            try:
                yield
            finally:
                _HTTP.reset(token)

    async def _post(self, client: Any, url: str, body: Mapping[str, Any] | None) -> Any:
        httpx = _httpx()
        try:
            resp = await (client.get(url) if body is None else client.post(url, json=body))
        except httpx.TransportError as exc:  # connection refused, reset, read timeout ...
            raise LLMCallError(f"{type(exc).__name__}: {exc}", transient=True) from exc
        if resp.status_code >= 400:
            transient = resp.status_code in _TRANSIENT_STATUS
            raise LLMCallError(f"HTTP {resp.status_code} from {url}: {resp.text[:300]}", transient=transient)
        try:
            return resp.json()
        except ValueError as exc:
            raise LLMCallError(f"invalid JSON from {url}: {resp.text[:200]!r}", transient=False) from exc

    async def _resolve_model(self, client: Any) -> str | None:
        if self._model is None:
            try:
                data = await self._post(client, self.models_url, None)
                self._model = str(data["data"][0]["id"])
            except (LLMCallError, LookupError, TypeError):
                self._model = ""  # the server does not list models: send none
        return self._model or None

    async def achat(self, messages: Messages, *, max_tokens: int, top_logprobs: int) -> LLMReply:
        client = _HTTP.get()
        if client is None:
            async with self.session():
                return await self.achat(messages, max_tokens=max_tokens, top_logprobs=top_logprobs)
        body: dict[str, Any] = {
            "messages": [{"role": r, "content": c} for r, c in messages],
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "stream": False,
            **self.extra_body,
        }
        model = await self._resolve_model(client)
        if model:
            body["model"] = model
        want = top_logprobs > 0 and self.logprobs_supported
        if want:
            body.update(logprobs=True, top_logprobs=min(top_logprobs, 20))
        try:
            data = await self._post(client, self.url, body)
        except LLMCallError as exc:
            if not (want and "logprob" in str(exc).lower() and not exc.transient):
                raise
            self.logprobs_supported = False  # this server cannot: ask without from now on
            body.pop("logprobs", None)
            body.pop("top_logprobs", None)
            data = await self._post(client, self.url, body)
        try:
            choice = data["choices"][0]
            text = _text_content(choice["message"].get("content"))
        except (LookupError, TypeError, AttributeError) as exc:
            shape = str(data)[:200]
            raise LLMCallError(f"unexpected response shape from {self.url}: {shape}", transient=False) from exc
        usage = data.get("usage") or {}
        logprobs = choice.get("logprobs") or {}
        message = choice["message"]
        return LLMReply(
            text=text,
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            top_logprobs=_openai_logprobs(logprobs.get("content")) if isinstance(logprobs, Mapping) else None,
            finish_reason=_finish_reason(choice),
            reasoning=_reasoning_text(message.get("reasoning_content"), message.get("reasoning")),
            max_tokens=_int(body.get("max_tokens")),
        )


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - httpx comes with the llm extra
        raise missing_extra("httpx", "llm") from exc
    return httpx


# --------------------------------------------------------------------------- LangChain, LlamaIndex


class _FrameworkClient:
    """A framework's LLM object: its synchronous call (:meth:`_call`) runs in a worker thread."""

    backend: str  # the framework, for reports and cache keys

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @property
    def model_name(self) -> str:
        return _framework_model_name(self.llm)

    def _call(self, messages: Messages) -> LLMReply:
        raise NotImplementedError

    async def achat(self, messages: Messages, *, max_tokens: int, top_logprobs: int) -> LLMReply:
        return await in_thread(lambda: self._call(messages))


class LangChainClient(_FrameworkClient):
    """A LangChain chat model (messages in, ``AIMessage`` out) or string LLM (prompt in, text out)."""

    backend = "langchain"

    def __init__(self, llm: Any) -> None:
        from langchain_core.language_models import BaseChatModel, BaseLLM

        super().__init__(llm)
        self.chat = isinstance(llm, BaseChatModel)
        self.string_llm = isinstance(llm, BaseLLM)

    def _call(self, messages: Messages) -> LLMReply:
        budget = _framework_budget(self.llm)
        if not self.chat:
            prompt = "\n\n".join(c for _, c in messages)
            if self.string_llm:  # generate(), unlike invoke(), keeps the generation info (finish_reason)
                gen = self.llm.generate([prompt]).generations[0][0]
                info = gen.generation_info or {}
                return LLMReply(text=gen.text, finish_reason=_finish_reason(info), max_tokens=budget)
            out = self.llm.invoke(prompt)
            return LLMReply(text=_text_content(getattr(out, "content", out)), max_tokens=budget)
        from langchain_core.messages import HumanMessage, SystemMessage

        msgs = [SystemMessage(content=c) if r == "system" else HumanMessage(content=c) for r, c in messages]
        out = self.llm.invoke(msgs)
        usage = getattr(out, "usage_metadata", None) or {}
        meta = getattr(out, "response_metadata", None) or {}
        extra = getattr(out, "additional_kwargs", None) or {}
        logprobs = meta.get("logprobs")
        content = getattr(out, "content", out)
        return LLMReply(
            text=_text_content(content),
            prompt_tokens=_int(usage.get("input_tokens")),
            completion_tokens=_int(usage.get("output_tokens")),
            top_logprobs=_openai_logprobs(logprobs.get("content")) if isinstance(logprobs, Mapping) else None,
            finish_reason=_finish_reason(meta),
            reasoning=_reasoning_text(extra.get("reasoning_content"), content if isinstance(content, list) else None),
            max_tokens=budget,
        )


class LlamaIndexClient(_FrameworkClient):
    """A LlamaIndex ``LLM``: ``chat`` for every model (completion models format the messages themselves)."""

    backend = "llama-index"

    def _call(self, messages: Messages) -> LLMReply:
        from llama_index.core.llms import ChatMessage

        out = self.llm.chat([ChatMessage(role=r, content=c) for r, c in messages])
        usage = _llama_usage(out)
        logprobs = getattr(out, "logprobs", None)
        top = None
        if logprobs:
            top = [[(str(lp.token), float(lp.logprob)) for lp in pos] for pos in logprobs if pos]
        message = out.message
        extra = getattr(message, "additional_kwargs", None) or {}
        thinking = [b.content for b in getattr(message, "blocks", []) if type(b).__name__ == "ThinkingBlock"]
        return LLMReply(
            text=_text_content(getattr(message, "content", "")),
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            top_logprobs=top or None,
            finish_reason=_finish_reason(getattr(out, "raw", None), getattr(out, "additional_kwargs", None)),
            reasoning=_reasoning_text(
                *(t for t in thinking if t), extra.get("reasoning_content"), extra.get("thinking")
            ),
            max_tokens=_framework_budget(self.llm),
        )


def _llama_usage(out: Any) -> tuple[int | None, int | None]:
    """Token counts from a LlamaIndex response: ``additional_kwargs`` (OpenAI LLMs) or the raw usage."""
    extra = getattr(out, "additional_kwargs", None) or {}
    p, c = _int(extra.get("prompt_tokens")), _int(extra.get("completion_tokens"))
    if p is not None:
        return p, c
    raw = getattr(out, "raw", None)
    usage = raw.get("usage") if isinstance(raw, Mapping) else getattr(raw, "usage", None)
    if isinstance(usage, Mapping):
        return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    if usage is not None:
        return _int(getattr(usage, "prompt_tokens", None)), _int(getattr(usage, "completion_tokens", None))
    return None, None


def _framework_model_name(llm: Any) -> str:
    """The model name a framework LLM declares, else its class name."""
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(llm, attr, None)
        if isinstance(value, str) and value:
            return value
    meta = getattr(llm, "metadata", None)
    name = getattr(meta, "model_name", None)
    if isinstance(name, str) and name and name != "unknown":
        return name
    return type(llm).__name__


def _is_instance(obj: Any, module: str, path: str, names: Sequence[str]) -> bool:
    """``isinstance`` against a framework's classes, importing nothing the caller has not imported."""
    if module not in sys.modules:
        return False
    try:
        mod = __import__(path, fromlist=list(names))
    except ImportError:
        return False
    return isinstance(obj, tuple(getattr(mod, n) for n in names if hasattr(mod, n)))


def as_client(llm: Any, *, model: str | None = None, api_key: str | None = None) -> LLMClient:
    """The :class:`LLMClient` for what the user passed (see the module docs); ``model`` / ``api_key`` for URLs."""
    if isinstance(llm, str):
        return OpenAICompatibleClient(llm, model=model, api_key=api_key)
    if _is_instance(llm, "langchain_core", "langchain_core.language_models", ["BaseLanguageModel"]):
        return LangChainClient(llm)
    if _is_instance(llm, "llama_index.core", "llama_index.core.llms", ["LLM"]):
        return LlamaIndexClient(llm)
    if isinstance(llm, LLMClient):
        return llm
    raise InvalidArgumentError(
        f"llm must be a LangChain chat model or LLM, a LlamaIndex LLM, an OpenAI-compatible URL or an "
        f"LLMClient; got {type(llm).__name__}"
    )
