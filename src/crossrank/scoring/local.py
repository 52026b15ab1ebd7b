"""The local scorer: a Hugging Face reranker run in this process (tokenizer + family + backend).

It resolves and inspects the model directory when made (a bad path fails at construction, not on
the first query), loads weights on first use through the process-wide engine registry, and scores
sync (forward passes in the caller's thread) or async (tokenizing on a small thread pool, forward
passes through the engine's micro-batcher, so concurrent queries share them).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tokenizers import Tokenizer
from typing_extensions import TypedDict

from crossrank.errors import InvalidArgumentError
from crossrank.inputs import check_positive_int
from crossrank.model_files import ModelInfo, effective_max_length, inspect_model, resolve_model_dir
from crossrank.scales import aggregate_windows
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings, ScoreStats
from crossrank.scoring.engine import Engine, backend_for, check_backend_choice, get_engine
from crossrank.scoring.pairs import EncodedPairs, PairEncoder, load_tokenizer
from crossrank.scoring.token_cache import TokenCache, TokenCacheInfo, token_cache_for


class ModelOptions(TypedDict, total=False):
    """Options of a local model (:class:`LocalScorer`), accepted by :class:`~crossrank.Reranker` too.

    ``backend``: auto, torch, onnx or openvino; ``device``: e.g. ``cuda:0`` (torch); ``quantize``:
    auto, int8, bf16 or fp32; ``batch_size``: pairs per forward pass (default: the backend's
    measured best); ``max_length``: tokens per input (default: the model's declared length);
    ``local_files_only`` / ``revision`` / ``cache_folder``: Hub resolution; ``trust_remote_code``:
    run a model's own code; ``num_threads``: CPU threads; ``max_wait_ms`` / ``max_batch_pairs``:
    async micro-batching; ``template`` / ``instruction`` / ``prompt``: causal-LM rerankers' prompt
    family, task instruction (Qwen3-Reranker, mxbai-rerank-v2) and trailing task prompt
    (bge-reranker-v2-gemma; an option the family has no slot for raises); ``tune``: whether
    ``backend="auto"`` times the CPU paths once and runs the fastest (None: unless
    ``CROSSRANK_TUNE=0``; see :mod:`crossrank.scoring.tuning`).
    """

    backend: str
    device: str | None
    quantize: str
    batch_size: int | None
    max_length: int | None
    local_files_only: bool
    trust_remote_code: bool
    revision: str | None
    cache_folder: str | None
    num_threads: int | None
    max_wait_ms: float
    max_batch_pairs: int
    template: str | None
    instruction: str | None
    prompt: str | None
    tune: bool | None


class LocalScorer:
    """Scores with a local reranker model; see :class:`crossrank.Reranker` for the options."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        backend: str = "auto",
        device: str | None = None,
        quantize: str = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        cache_folder: str | None = None,
        num_threads: int | None = None,
        max_wait_ms: float = 3.0,
        max_batch_pairs: int = 512,
        template: str | None = None,
        instruction: str | None = None,
        prompt: str | None = None,
        tune: bool | None = None,
    ) -> None:
        check_backend_choice(backend, quantize)
        if tune is not None and not isinstance(tune, bool):
            raise InvalidArgumentError(f"tune must be True, False or None, got {tune!r}")
        self.tune = tune
        for option, value in (("instruction", instruction), ("prompt", prompt)):
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(f"{option} must be a str or None, got {type(value).__name__}")
        self.model_name = os.fspath(model)
        path = resolve_model_dir(model, revision=revision, local_files_only=local_files_only, cache_folder=cache_folder)
        self.info: ModelInfo = inspect_model(path, name=self.model_name, template=template)
        if prompt is not None and self.info.kind != "causal-lm":
            raise InvalidArgumentError(
                f"prompt= applies to causal-LM rerankers (prompt templates); {self.model_name} is a "
                f"{self.info.kind}, whose input is the plain (query, document) pair"
            )
        if self.info.kind == "causal-lm" and self.info.template is not None:
            from crossrank.prompts import TEMPLATES

            TEMPLATES[self.info.template].check_options(instruction=instruction, prompt=prompt)
        if instruction is not None and self.info.kind != "causal-lm":
            raise InvalidArgumentError(
                f"instruction= applies to causal-LM rerankers (prompt templates); {self.model_name} is a "
                f"{self.info.kind}, whose input is the plain (query, document) pair"
            )
        self.instruction = instruction
        self.prompt = prompt
        self.requested_backend = backend  # "auto" may fall back when the model will not export (scoring/auto.py)
        self.backend = backend_for(self.info, backend, device)
        if self.info.exported is not None:  # an exported folder: refuse a graph it lacks now, not on first use
            from crossrank.backends.portable import check_request

            check_request(self.info, backend, quantize, device)
        self.device = device
        self.quantize = quantize
        self.trust_remote_code = trust_remote_code
        self.num_threads = num_threads
        # None: the backend's measured sweet spot (its ``preferred_batch_size``).
        self._batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
        self.max_length = effective_max_length(self.info, max_length)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or max_wait_ms < 0:
            raise InvalidArgumentError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
        self.max_wait_ms = float(max_wait_ms)
        self.max_batch_pairs = check_positive_int("max_batch_pairs", max_batch_pairs) or 512
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        # pretokenize() before the model loads: the tokenizer alone, and its cache (None: pairs not assembled)
        self._doc_tokens: tuple[Tokenizer, TokenCache | None] | None = None

    # ------------------------------------------------------------------ loading
    @property
    def engine(self) -> Engine:
        """The loaded model, shared process-wide; loaded on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = get_engine(
                        self.info,
                        backend=self.requested_backend,
                        device=self.device,
                        quantize=self.quantize,
                        trust_remote_code=self.trust_remote_code,
                        num_threads=self.num_threads,
                        instruction=self.instruction,
                        prompt=self.prompt,
                        tune=self.tune,
                    )
        return self._engine

    @property
    def loaded(self) -> bool:
        """Whether the weights are loaded yet."""
        return self._engine is not None

    @property
    def batch_size(self) -> int:
        """Pairs per forward pass: the constructor's value, else the backend's preferred size."""
        if self._batch_size is not None:
            return self._batch_size
        return int(getattr(self.engine.backend, "preferred_batch_size", 32))

    @property
    def backend_name(self) -> str:
        """The backend that scores (e.g. ``openvino-int8``) once loaded, else the one requested."""
        return self._engine.backend.name if self._engine is not None else self.backend

    @property
    def identity(self) -> str:
        return (
            f"{self.info.fingerprint}:{self.backend}:{self.quantize}:{self.device}:"
            f"{self.trust_remote_code}:{self.max_length}:{self.info.template}:{self.instruction}:{self.prompt}"
        )

    def describe(self) -> ScorerInfo:
        return ScorerInfo(
            kind=self.info.kind, model=self.model_name, backend=self.backend_name, max_length=self.max_length
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text (no special tokens): tells which documents will not fit ``max_length``."""
        return self.engine.encoder(self.max_length).count_tokens(texts)

    @property
    def takes_instruction(self) -> bool:
        """Whether the model's prompt has an instruction slot (a per-call ``instruction`` can be applied)."""
        if self.info.kind != "causal-lm" or self.info.template is None:
            return False
        from crossrank.prompts import TEMPLATES

        template = TEMPLATES.get(self.info.template)
        return template is not None and "instruction" in template.options

    def check_settings(self, settings: ScoreSettings) -> None:
        """Raise ``InvalidArgumentError`` for per-call settings this model cannot apply (before any work)."""
        if settings.instruction is not None and not self.takes_instruction:
            if self.info.template:
                what = f"a {self.info.template} prompt, which has no instruction slot"
            else:
                what = f"a {self.info.kind}, which reads the plain (query, document) pair"
            raise InvalidArgumentError(
                "instruction applies to rerankers whose prompt has an instruction slot (Qwen3-Reranker, "
                f"mxbai-rerank-v2); this model is {what}"
            )

    # ------------------------------------------------------------------ the document token cache
    def _token_cache(self) -> tuple[Tokenizer, TokenCache] | None:
        """This model's tokenizer and its token cache; None where documents' ids are not cached.

        Before the model loads, the tokenizer is loaded alone (never the weights); the engine that
        loads later finds the same cache, which is keyed by the tokenizer's content.
        """
        if self.info.kind != "cross-encoder":
            return None  # causal-LM prompts format each document into the prompt: nothing to reuse
        if self._engine is not None:
            enc = self._engine.encoder(self.max_length)
            if not (isinstance(enc, PairEncoder) and enc.assembles):
                return None
            return self._engine.tokenizer, self._engine.token_cache
        with self._lock:
            if self._doc_tokens is None:
                tok = load_tokenizer(self.info.path)
                assembles = PairEncoder(tok, self.max_length).assembles
                self._doc_tokens = (tok, token_cache_for(tok) if assembles else None)
            tok, cache = self._doc_tokens
        return (tok, cache) if cache is not None else None

    def pretokenize(self, texts: Sequence[str]) -> int:
        """Tokenize documents into the shared token cache now (e.g. while indexing them), so queries don't.

        Loads the tokenizer only, never the weights. Returns how many texts were tokenized (0 when
        all were cached already, the cache is off, or the model does not cache documents' ids:
        causal-LM rerankers, and pair layouts the tokenizer must build itself).
        """
        found = self._token_cache()
        if found is None:
            return 0
        tok, cache = found
        return cache.fill(texts, lambda ts: [e.ids for e in tok.encode_batch(ts, add_special_tokens=False)])

    def token_cache_info(self) -> TokenCacheInfo | None:
        """Hits, misses and size of the document token cache this model uses (None: it caches none)."""
        found = self._token_cache()
        return found[1].info() if found is not None else None

    # ------------------------------------------------------------------ scoring
    def _encode(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> tuple[EncodedPairs, float]:
        encoder = self.engine.encoder(self.max_length)
        t = time.perf_counter()
        enc = encoder.encode(
            query,
            texts,
            windows=settings.long_documents == "windows",
            window_overlap=settings.window_overlap,
            max_windows=settings.max_windows,
            max_document_tokens=settings.max_document_tokens,
            truncation_side=settings.truncation_side,
            instruction=settings.instruction,
        )
        return enc, time.perf_counter() - t

    @staticmethod
    def _scored(enc: EncodedPairs, items: np.ndarray, n: int, settings: ScoreSettings, stats: ScoreStats) -> Scored:
        raw = aggregate_windows(items, np.asarray(enc.owner, dtype=np.int64), n, settings.aggregate)
        stats.token_cache_hits, stats.token_cache_misses = enc.token_cache_hits, enc.token_cache_misses
        return Scored(
            raw=raw,
            windows=list(enc.windows),
            truncated=list(enc.truncated),
            query_truncated=enc.query_truncated,
            stats=stats,
        )

    def score(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        if not texts:
            return Scored.empty()
        enc, tokenize_s = self._encode(query, texts, settings)
        stats = ScoreStats(tokens=sum(len(ids) for ids in enc.ids), tokenize_s=tokenize_s)
        items = self.engine.score_tokens(enc.ids, enc.types, batch_size=self.batch_size, stats=stats)
        return self._scored(enc, items, len(texts), settings, stats)

    async def ascore(self, query: str, texts: Sequence[str], settings: ScoreSettings) -> Scored:
        if not texts:
            return Scored.empty()
        loop = asyncio.get_running_loop()
        # Tokenizing (and a first model load) would block the loop: run it on the scorer's pool.
        enc, tokenize_s = await loop.run_in_executor(self._pool(), self._encode, query, list(texts), settings)
        batcher = self.engine.batcher(max_wait_ms=self.max_wait_ms, max_pairs=self.max_batch_pairs)
        t = time.perf_counter()
        items = await asyncio.wrap_future(batcher.submit(enc.ids, enc.types, batch_size=self.batch_size))
        stats = ScoreStats(
            pairs=len(enc.ids),
            tokens=sum(len(ids) for ids in enc.ids),
            tokenize_s=tokenize_s,
            model_s=time.perf_counter() - t,
        )
        return self._scored(enc, items, len(texts), settings, stats)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="crossrank-prep")
            return self._executor
