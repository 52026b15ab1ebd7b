"""A loaded model (tokenizer + backend + head) and the process-wide registry that shares it.

Loading is the expensive part of a reranker, so one ``Engine`` per (model, backend, device) serves
every ``Reranker``, adapter and thread in the process. The engine holds no per-call state: forward
passes are serialised by a lock (each one already uses every core), and the micro-batcher merges
pairs from concurrent async callers into shared forward passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from crossrank.backends import Backend, is_out_of_memory
from crossrank.errors import CrossrankError, InvalidArgumentError
from crossrank.model_files import ModelInfo
from crossrank.scoring.pairs import PairEncoder, load_tokenizer

if TYPE_CHECKING:
    from crossrank.scoring.batching import MicroBatcher

log = logging.getLogger("crossrank")

BackendName = Literal["auto", "torch", "onnx"]
Quantize = Literal["auto", "int8", "fp32"]


@dataclass
class ForwardStats:
    pairs: int = 0
    retries: int = 0
    seconds: float = 0.0


class Engine:
    """One loaded cross-encoder: turns token pairs into raw relevance scores."""

    def __init__(self, info: ModelInfo, backend: Backend) -> None:
        self.info = info
        self.backend = backend
        self.tokenizer = load_tokenizer(info.path)
        self._encoders: dict[int, PairEncoder] = {}
        self._lock = threading.Lock()  # serialises forward passes
        self._meta_lock = threading.Lock()
        self._batcher: MicroBatcher | None = None

    @property
    def identity(self) -> str:
        """Stable name for caches: the model's content hash plus the backend that scores it."""
        return f"{self.info.fingerprint}:{self.backend.name}"

    def encoder(self, max_length: int) -> PairEncoder:
        with self._meta_lock:
            enc = self._encoders.get(max_length)
            if enc is None:
                enc = self._encoders[max_length] = PairEncoder(self.tokenizer, max_length)
            return enc

    def to_raw(self, logits: np.ndarray) -> np.ndarray:
        """One score per pair: the logit, or positive-minus-negative logit (the log-odds) for 2-label heads."""
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 1:
            return logits
        if logits.shape[1] == 1:
            return logits[:, 0]
        pos = self.info.positive_index
        return logits[:, pos] - logits[:, 1 - pos]

    def score_pairs(
        self,
        encoder: PairEncoder,
        ids: Sequence[list[int]],
        types: Sequence[list[int]],
        *,
        batch_size: int,
        stats: ForwardStats | None = None,
    ) -> np.ndarray:
        """Raw scores for token pairs, in input order; batches are length-sorted to minimise padding."""
        n = len(ids)
        out = np.empty(n, dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: len(ids[i]), reverse=True)
        stats = stats if stats is not None else ForwardStats()
        start = 0
        size = batch_size
        while start < n:
            chunk = order[start : start + size]
            batch = encoder.pad([ids[i] for i in chunk], [types[i] for i in chunk])
            t0 = time.perf_counter()
            try:
                with self._lock:
                    logits = self.backend.forward(batch)
            except CrossrankError:
                raise
            except Exception as exc:
                if is_out_of_memory(exc) and size > 1:
                    size = max(1, size // 2)
                    stats.retries += 1
                    log.warning("out of memory on a batch of %d pairs; retrying with %d", len(chunk), size)
                    continue
                raise
            finally:
                stats.seconds += time.perf_counter() - t0
            out[chunk] = self.to_raw(logits)
            stats.pairs += len(chunk)
            start += len(chunk)
        return out

    def batcher(self) -> MicroBatcher:
        from crossrank.scoring.batching import MicroBatcher

        with self._meta_lock:
            if self._batcher is None:
                self._batcher = MicroBatcher(self)
            return self._batcher


_REGISTRY: dict[tuple[object, ...], Engine] = {}
_REGISTRY_LOCK = threading.Lock()


def resolve_backend(backend: str, device: str | None) -> str:
    """``auto``: torch fp16 on CUDA; on CPU, OpenVINO (static int8 on VNNI/AMX CPUs, else bf16) where it
    is installed and the CPU has int8 or bf16 units, else ONNX Runtime int8; torch when neither is installed."""
    if backend not in ("auto", "torch", "onnx", "openvino"):
        raise InvalidArgumentError(f"backend={backend!r} is not supported; choose auto, torch, onnx or openvino")
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


def get_engine(
    info: ModelInfo,
    *,
    backend: str = "auto",
    device: str | None = None,
    quantize: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    num_threads: int | None = None,
) -> Engine:
    """Load once, share everywhere: the same model asked for twice returns the same engine."""
    kind = resolve_backend(backend, device)
    key = (str(info.path.resolve()), info.fingerprint, kind, device, quantize, dtype, trust_remote_code, num_threads)
    with _REGISTRY_LOCK:
        engine = _REGISTRY.get(key)
        if engine is not None:
            return engine
        be: Backend
        if kind == "torch":
            from crossrank.backends.torch_backend import TorchBackend

            be = TorchBackend(info, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        elif kind == "openvino":
            from crossrank.backends.openvino_backend import OpenVinoBackend

            be = OpenVinoBackend(info, quantize=quantize, num_threads=num_threads)
        else:
            from crossrank.backends.onnx_backend import OnnxBackend

            be = OnnxBackend(info, quantize=quantize, num_threads=num_threads)
        engine = _REGISTRY[key] = Engine(info, be)
        return engine


def clear_engines() -> None:
    """Forget every loaded model (frees memory once no Reranker holds them)."""
    with _REGISTRY_LOCK:
        for engine in _REGISTRY.values():
            if engine._batcher is not None:
                engine._batcher.close()
        _REGISTRY.clear()


def loaded_engines() -> int:
    with _REGISTRY_LOCK:
        return len(_REGISTRY)
