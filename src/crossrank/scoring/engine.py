"""A loaded model (tokenizer + backend + family head) and the process-wide registry that shares it.

Loading is the expensive part of a reranker, so one ``Engine`` per (model, backend, device, ...)
serves every ``Reranker``, adapter and thread in the process. The engine holds no per-call state:
forward passes are serialised by a lock (each one already uses every core), and micro-batchers —
one per batching setting — merge pairs from concurrent async callers into shared forward passes.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from crossrank.backends import Backend, is_out_of_memory
from crossrank.backends.table import BACKEND_CHOICES, BACKENDS, QUANTIZE_CHOICES
from crossrank.errors import (
    BackendUnavailableError,
    CrossrankError,
    ExportError,
    InvalidArgumentError,
    ModelLoadError,
    NotExportedError,
)
from crossrank.model_files import ModelInfo
from crossrank.scoring.base import ScoreStats
from crossrank.scoring.batching import MicroBatcher
from crossrank.scoring.families import Encoder, ModelFamily, family_for
from crossrank.scoring.pairs import PairEncoder, load_tokenizer, pad_batch, pad_token_id
from crossrank.scoring.token_cache import TokenCache, token_cache_for

if TYPE_CHECKING:
    from crossrank.scoring import tuning

log = logging.getLogger("crossrank")


class Engine:
    """One loaded model: turns token inputs into raw relevance scores."""

    def __init__(self, info: ModelInfo, backend: Backend, tokenizer: Tokenizer, family: ModelFamily) -> None:
        self.info = info
        self.backend = backend
        self.family = family
        self.tokenizer = tokenizer
        self.pad_id = pad_token_id(tokenizer)
        self._encoders: dict[int, Encoder] = {}
        self._batchers: dict[tuple[float, int], MicroBatcher] = {}
        self._lock = threading.Lock()  # serialises forward passes
        self._meta_lock = threading.Lock()
        self._token_cache: TokenCache | None = None

    @property
    def token_cache(self) -> TokenCache:
        """Documents' token ids, shared by every engine and scorer of this tokenizer (see :mod:`.token_cache`)."""
        if self._token_cache is None:
            self._token_cache = token_cache_for(self.tokenizer)  # made when first needed: hashing costs
        return self._token_cache

    @property
    def identity(self) -> str:
        """Stable name for caches: the model's content hash plus the backend that scores it."""
        return f"{self.info.fingerprint}:{self.backend.name}"

    def encoder(self, max_length: int) -> Encoder:
        """The family's pair encoder at ``max_length`` (made once, then shared: it is read-only)."""
        with self._meta_lock:
            enc = self._encoders.get(max_length)
            if enc is None:
                enc = self.family.encoder(self.tokenizer, max_length)
                if isinstance(enc, PairEncoder) and enc.assembles:
                    enc.use_cache(self.token_cache)
                self._encoders[max_length] = enc
            return enc

    def score_tokens(
        self,
        ids: Sequence[list[int]],
        types: Sequence[list[int]],
        *,
        batch_size: int,
        stats: ScoreStats | None = None,
    ) -> np.ndarray:
        """Raw scores for token inputs, in input order.

        Batches are length-sorted to minimise padding; a batch that runs out of memory is retried
        at half the size (counted in ``stats.batch_retries``) instead of failing the call. A backend
        that runs a whole call at once (``forward_batches``: the torch backend, waiting on its
        device once per call) gets the batches lazily, each padded while the previous one runs.
        """
        n = len(ids)
        out = np.empty(n, dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: len(ids[i]), reverse=True)
        stats = stats if stats is not None else ScoreStats()
        size = batch_size
        if getattr(self.backend, "forward_batches", None) is not None:
            if self._score_call(ids, types, order, out, size, stats):
                return out
            size = max(1, size // 2)  # out of memory: batch by batch, halving again as needed
        start = 0
        while start < n:
            chunk = order[start : start + size]
            batch = self._pad(ids, types, chunk)
            t0 = time.perf_counter()
            try:
                with self._lock:
                    logits = self.backend.forward(batch)
            except CrossrankError:
                raise
            except Exception as exc:
                if is_out_of_memory(exc) and size > 1:
                    size = max(1, size // 2)
                    stats.batch_retries += 1
                    log.warning("out of memory on a batch of %d pairs; retrying with %d", len(chunk), size)
                    continue
                raise
            finally:
                stats.model_s += time.perf_counter() - t0
            out[chunk] = self.family.head(logits[: len(chunk)])
            stats.pairs += len(chunk)
            start += len(chunk)
        return out

    def _pad(self, ids: Sequence[list[int]], types: Sequence[list[int]], chunk: list[int]) -> dict[str, np.ndarray]:
        """One padded batch, at the shape the backend asks for (``padded_shape``: its length buckets), if any."""
        rows, width = len(chunk), max(len(ids[i]) for i in chunk)
        shape = getattr(self.backend, "padded_shape", None)
        if shape is not None:
            rows, width = shape(rows, width)
        return pad_batch(
            [ids[i] for i in chunk],
            [types[i] for i in chunk],
            pad_id=self.pad_id,
            left=self.family.left_padding,
            width=width,
            rows=rows,
        )

    def _score_call(
        self,
        ids: Sequence[list[int]],
        types: Sequence[list[int]],
        order: list[int],
        out: np.ndarray,
        size: int,
        stats: ScoreStats,
    ) -> bool:
        """Every batch through ``backend.forward_batches`` in one go; False when it ran out of memory."""
        chunks = [order[s : s + size] for s in range(0, len(order), size)]
        t0 = time.perf_counter()
        try:
            with self._lock:
                logits = self.backend.forward_batches(self._pad(ids, types, c) for c in chunks)  # type: ignore[attr-defined]
        except CrossrankError:
            raise
        except Exception as exc:
            if is_out_of_memory(exc) and size > 1:
                stats.batch_retries += 1
                log.warning(
                    "out of memory in a call of %d batches of %d pairs; retrying batch by batch", len(chunks), size
                )
                return False
            raise
        finally:
            stats.model_s += time.perf_counter() - t0
        for chunk, lg in zip(chunks, logits):
            out[chunk] = self.family.head(lg[: len(chunk)])
        stats.pairs += len(order)
        return True

    def batcher(self, *, max_wait_ms: float = 3.0, max_pairs: int = 512) -> MicroBatcher:
        """The micro-batcher for these settings (shared by every caller that uses the same ones)."""
        key = (float(max_wait_ms), int(max_pairs))
        with self._meta_lock:
            b = self._batchers.get(key)
            if b is None:
                b = self._batchers[key] = MicroBatcher(
                    lambda ids, types, bs: self.score_tokens(ids, types, batch_size=bs),
                    max_wait_ms=max_wait_ms,
                    max_pairs=max_pairs,
                )
            return b

    def close(self) -> None:
        """Stop this engine's batcher threads."""
        with self._meta_lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for b in batchers:
            b.close()


_REGISTRY: dict[tuple[object, ...], Engine] = {}
_REGISTRY_LOCK = threading.Lock()


def check_backend_choice(backend: object, quantize: object) -> None:
    """Raise a precise error for an unknown backend or precision, listing the choices from the table."""
    if backend not in BACKEND_CHOICES:
        raise InvalidArgumentError(f"backend={backend!r} is not supported; choose one of {', '.join(BACKEND_CHOICES)}")
    if quantize not in QUANTIZE_CHOICES:
        raise InvalidArgumentError(
            f"quantize={quantize!r} is not supported; choose one of {', '.join(QUANTIZE_CHOICES)}"
        )
    spec = BACKENDS.get(str(backend))
    if spec is not None and quantize != "auto" and quantize not in spec.precisions:
        elsewhere = [name for name, s in BACKENDS.items() if quantize in s.precisions]
        raise InvalidArgumentError(
            f"quantize={quantize!r} is not available on backend={backend!r} (it runs {', '.join(spec.precisions)}); "
            f"{quantize} runs on {' or '.join(repr(n) for n in elsewhere)}"
        )


def resolve_backend(backend: str, device: str | None) -> str:
    """``auto``: torch (fp16) on CUDA; on CPU, OpenVINO (static int8 on VNNI/AMX CPUs, else bf16) where it
    is installed and the CPU has int8 or bf16 units, else ONNX Runtime int8; torch when neither is installed."""
    check_backend_choice(backend, "auto")
    if backend != "auto":
        return backend
    if device is not None and not device.startswith("cpu"):
        return "torch"
    if device is None:
        from crossrank.backends.torch_backend import cuda_available

        if cuda_available():
            return "torch"
    from crossrank.backends.openvino_backend import openvino_installed, openvino_variant

    # One decision, made where the precision is chosen: OpenVINO pays off only with int8 or bf16 units.
    if openvino_installed() and openvino_variant("auto") != "fp32":
        return "openvino"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


def _builder(
    info: ModelInfo,
    family: ModelFamily,
    *,
    device: str | None,
    dtype: str,
    trust_remote_code: bool,
    threads: int | None,
) -> Callable[..., Backend]:
    """``build(kind, quantize, threads=threads)``: :func:`_make_backend` with the model's settings bound."""

    def build(kind: str, quantize: str, num_threads: int | None = threads) -> Backend:
        return _make_backend(
            kind,
            info,
            family,
            device=device,
            quantize=quantize,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            num_threads=num_threads,
        )

    return build


def _make_backend(
    kind: str,
    info: ModelInfo,
    family: ModelFamily,
    *,
    device: str | None,
    quantize: str,
    dtype: str,
    trust_remote_code: bool,
    num_threads: int | None,
) -> Backend:
    if info.kind == "causal-lm":
        from crossrank.backends.causal_torch import CausalTorchBackend

        return CausalTorchBackend(
            info, family.score_token_ids, device=device, quantize=quantize, trust_remote_code=trust_remote_code
        )
    spec = BACKENDS[kind]
    cls = getattr(importlib.import_module(spec.module), spec.cls)
    if kind == "torch":
        return cls(info, device=device, dtype=dtype, quantize=quantize, trust_remote_code=trust_remote_code)
    return cls(info, quantize=quantize, num_threads=num_threads, trust_remote_code=trust_remote_code)


def backend_for(info: ModelInfo, backend: str, device: str | None) -> str:
    """The backend that will score ``info``: ``backend`` resolved from ``auto`` for this model's kind.

    Causal-LM rerankers run on torch (fp32/bf16 on CPU, fp16 on CUDA); asking for a fast CPU
    backend for them explicitly is an ``ExportError`` that says what to use instead. An exported
    folder (``crossrank export``) runs on the CPU paths it holds, never torch, whatever GPU is there.
    """
    if info.exported is not None:
        check_backend_choice(backend, "auto")
        from crossrank.backends.portable import check_request, first_backend

        check_request(info, backend, None, device)
        return first_backend(info) if backend == "auto" else backend
    if info.kind == "causal-lm":
        if backend in ("onnx", "openvino"):
            raise ExportError(
                f"{info.name} is a causal-LM reranker ({info.template}); backend={backend!r} does not run that "
                "family yet: use backend='torch' (or 'auto'), with quantize='bf16' on CPUs with bf16 units"
            )
        check_backend_choice(backend, "auto")
        return "torch"
    return resolve_backend(backend, device)


def get_engine(
    info: ModelInfo,
    *,
    backend: str = "auto",
    device: str | None = None,
    quantize: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    num_threads: int | None = None,
    instruction: str | None = None,
    prompt: str | None = None,
    tune: bool | None = None,
) -> Engine:
    """Load once, share everywhere: the same model asked for twice returns the same engine.

    ``backend="auto"`` on CPU runs what :mod:`crossrank.scoring.tuning` measured fastest for this
    model and CPU (measuring once, then cached); ``tune=False`` or ``CROSSRANK_TUNE=0`` uses the
    static rule and its fallback chain instead (``tune=None``: the environment decides).
    """
    kind = backend_for(info, backend, device)
    falls_back = backend == "auto" and info.kind == "cross-encoder" and kind != "torch"
    from crossrank.scoring import tuning

    measured = falls_back and (tuning.tuning_enabled() if tune is None else bool(tune))
    key = _key(
        info,
        "auto" if falls_back else kind,
        device,
        quantize,
        dtype,
        trust_remote_code,
        num_threads,
        instruction,
        prompt,
        measured,
    )
    with _REGISTRY_LOCK:
        engine = _REGISTRY.get(key)
        if engine is not None:
            return engine
        tokenizer = load_tokenizer(info.path)
        family = family_for(info, tokenizer, instruction=instruction, prompt=prompt)

        build = _builder(
            info, family, device=device, dtype=dtype, trust_remote_code=trust_remote_code, threads=num_threads
        )

        if not falls_back:
            try:
                be = build(kind, quantize)
            except NotExportedError:
                raise  # an exported folder without that graph: its message already says what it holds
            except ExportError as exc:
                raise ExportError(
                    f"{exc}. backend={kind!r}, quantize={quantize!r} cannot run {info.name} ({info.model_type}); "
                    "use backend='auto' (it falls back to what works) or backend='torch'"
                ) from exc
        else:
            tuned = _tuned_backend(info, tokenizer, family, quantize, num_threads, build) if measured else None
            be = tuned if tuned is not None else _first_that_builds(info, kind, quantize, build)
        engine = _REGISTRY[key] = Engine(info, be, tokenizer, family)
        return engine


def measure_paths(
    info: ModelInfo,
    tokenizer: Tokenizer,
    family: ModelFamily,
    build: Callable[[str, str, int], Backend],
    *,
    quantize: str = "auto",
    num_threads: int | None = None,
    progress: bool | None = None,
    full: bool = False,
) -> tuning.Decision:
    """Run :func:`crossrank.scoring.tuning.tune` for a model: time every CPU path on its own encoder's inputs.

    An exported folder is measured on the quick budget (:data:`crossrank.scoring.tuning.QUICK_QUERIES`
    ...) unless ``full`` (``crossrank tune``).
    """
    from crossrank.scoring import tuning

    encoders: dict[int, Encoder] = {}

    def encoder_for(length: int) -> Encoder:
        return encoders.setdefault(length, family.encoder(tokenizer, length))

    def score(be: Backend, work: tuning.Workload, batch_size: int) -> np.ndarray:
        return Engine(info, be, tokenizer, family).score_tokens(work.ids, work.types, batch_size=batch_size)

    if info.exported is not None and not full:  # a quick first start for exported folders (tuning.QUICK_*)
        work = tuning.workload(info, encoder_for, queries=tuning.QUICK_QUERIES)
        budget: dict[str, Any] = {"repeats": tuning.QUICK_REPEATS, "batch_sizes": tuning.QUICK_BATCH_SIZES}
    else:
        work, budget = tuning.workload(info, encoder_for), {}
    return tuning.tune(
        info, build, score, work, quantize=quantize, num_threads=num_threads, progress=progress, **budget
    )


def retune(
    info: ModelInfo,
    *,
    quantize: str = "auto",
    num_threads: int | None = None,
    trust_remote_code: bool = False,
    progress: bool | None = None,
    save: bool = True,
) -> tuning.Decision:
    """Measure the CPU paths for ``info`` now (ignoring any cached decision) and cache the new decision.

    What ``crossrank tune`` runs. Engines already loaded keep their backend until
    :func:`clear_engines` (or a new process) picks the new decision up.
    """
    from crossrank.scoring import tuning

    check_backend_choice("auto", quantize)
    if info.kind != "cross-encoder":
        raise InvalidArgumentError(
            f"{info.name} is a {info.kind} reranker; tuning measures the CPU paths of cross-encoders only"
        )
    tokenizer = load_tokenizer(info.path)
    family = family_for(info, tokenizer)

    build = _builder(info, family, device="cpu", dtype="auto", trust_remote_code=trust_remote_code, threads=num_threads)

    decision = measure_paths(
        info, tokenizer, family, build, quantize=quantize, num_threads=num_threads, progress=progress, full=True
    )
    if save:
        tuning.save_decision(decision)
    return decision


def _tuned_backend(
    info: ModelInfo,
    tokenizer: Tokenizer,
    family: ModelFamily,
    quantize: str,
    num_threads: int | None,
    build: Callable[..., Backend],
) -> Backend | None:
    """The measured fastest path (measuring now if no decision is cached); None: use the static chain."""
    from crossrank.scoring import tuning

    decision = tuning.cached_decision(info, quantize, num_threads)
    built: dict[tuple[str, str, int | None], Backend] = {}
    if decision is None:

        def build_once(kind: str, q: str, threads: int | None = num_threads) -> Backend:
            # Tuning builds every path; the chosen one is then taken from here, not compiled again.
            if (kind, q, threads) not in built:
                built[(kind, q, threads)] = build(kind, q, threads)
            return built[(kind, q, threads)]

        try:
            decision = measure_paths(info, tokenizer, family, build_once, quantize=quantize, num_threads=num_threads)
        except CrossrankError as exc:
            log.warning("%s: could not measure the CPU paths (%s); using the static rule", info.name, exc)
            return None
        tuning.save_decision(decision)
        log.info(
            "%s: auto chose %s %s (batch %d) by measurement",
            info.name,
            decision.backend,
            decision.quantize,
            decision.batch_size,
        )
    threads = decision.threads if num_threads is None else num_threads
    chosen = built.pop((decision.backend, decision.quantize, threads), None)
    built.clear()  # the other measured paths are released
    try:
        be = chosen if chosen is not None else build(decision.backend, decision.quantize, threads)
    except (ExportError, ModelLoadError, BackendUnavailableError) as exc:
        log.warning(
            "%s: the tuned path %s %s no longer builds (%s); using the static rule",
            info.name,
            decision.backend,
            decision.quantize,
            exc,
        )
        return None
    be.preferred_batch_size = decision.batch_size  # type: ignore[attr-defined]
    be.tuned = decision  # type: ignore[attr-defined]
    return be


def _key(info: ModelInfo, *settings: object) -> tuple[object, ...]:
    return (str(info.path.resolve()), info.fingerprint, info.template, *settings)


def _first_that_builds(info: ModelInfo, first: str, quantize: str, build: Callable[[str, str], Backend]) -> Backend:
    """``auto``: the first backend in the fallback chain that builds; one warning if it is not the first."""
    from crossrank.scoring import auto

    choices = auto.chain(first, quantize)
    if info.exported is not None:  # only what the folder holds, fp32 last: nothing is exported for it
        from crossrank.backends.openvino_backend import openvino_installed
        from crossrank.backends.portable import holds, nothing_runs

        every = [*auto.chain("openvino" if openvino_installed() else "onnx", quantize), ("onnx", "fp32")]
        choices = [c for c in dict.fromkeys(every) if holds(info, *c) and quantize in ("auto", c[1])]
        if not choices:
            raise nothing_runs(info)
    known = auto.remembered(info, quantize)
    if known is not None and known in choices:
        choices = choices[choices.index(known) :]
        log.info("%s: using %s %s, as decided on an earlier start", info.name, *known)
    failures: list[str] = []
    for i, (kind, q) in enumerate(choices):
        try:
            be = build(kind, q)
        except (ExportError, ModelLoadError, BackendUnavailableError) as exc:
            if i == len(choices) - 1:
                raise
            failures.append(f"{kind} {q}: {exc}")
            continue
        if failures:
            warnings.warn(
                f"{info.name}: {'; '.join(failures)}. Running {be.name} instead (remembered for the next start; "
                f"delete {auto._memory_file(info, quantize)} to try again).",
                RuntimeWarning,
                stacklevel=5,
            )
            auto.remember(info, quantize, (kind, q), failures)
        return be
    raise AssertionError("unreachable: the last choice either builds or raises")  # pragma: no cover


def clear_engines() -> None:
    """Forget every loaded model (frees memory once no Reranker holds them)."""
    with _REGISTRY_LOCK:
        for engine in _REGISTRY.values():
            engine.close()
        _REGISTRY.clear()


def loaded_engines() -> int:
    """How many models are loaded in this process."""
    with _REGISTRY_LOCK:
        return len(_REGISTRY)
