"""OpenVINO on CPU: static int8 (VNNI), bf16 or fp32.

``quantize``: ``"int8"`` runs the NNCF-quantized IR (``ov_quantize``), with the unquantized ops in
bf16 where the CPU has bf16 units; ``"bf16"`` and ``"fp32"`` run the fp32 ONNX export at that
precision; ``"auto"`` takes int8 when the CPU has int8 dot-product units (VNNI/AMX) and NNCF is
installed, else bf16 where native, else fp32. Numbers behind this: benchmarks/README.md.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from crossrank.backends import default_threads
from crossrank.backends.export import ensure_model_file
from crossrank.errors import BackendUnavailableError, InvalidArgumentError, ModelLoadError
from crossrank.model_files import ModelInfo


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo; empty where unknown (then no fast path is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AVX-512 BF16 or AMX)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot() -> bool:
    """int8 dot-product units (AVX-512 VNNI, AVX-VNNI or AMX)."""
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def nncf_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def openvino_variant(quantize: str) -> str:
    """The precision ``quantize`` means on this machine: int8, bf16 or fp32."""
    if quantize == "auto":
        if cpu_has_int8_dot() and nncf_installed():
            return "int8"
        return "bf16" if cpu_has_bf16() else "fp32"
    return quantize


class OpenVinoBackend:
    def __init__(self, info: ModelInfo, *, quantize: str = "auto", num_threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend='openvino' needs OpenVINO: pip install 'crossrank[openvino]'"
            ) from exc
        variant = openvino_variant(quantize)
        if variant == "bf16" and not cpu_has_bf16():
            raise InvalidArgumentError(
                "quantize='bf16' needs a CPU with bf16 units (AVX-512 BF16 or AMX); use quantize='int8' or 'fp32'"
            )
        # int8: the ops left unquantized (softmax, layer norm, attention) run in bf16 where native.
        precision = "f32" if variant == "fp32" or not cpu_has_bf16() else "bf16"
        path = ensure_model_file(info, "ov-int8" if variant == "int8" else "fp32")
        threads = num_threads or default_threads()
        try:
            core = ov.Core()
            self._compiled = core.compile_model(
                core.read_model(str(path)),
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": precision,
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": threads,
                    # Kernels are cached per input shape (default 5,000 shapes, ~4 MB each here): with real
                    # traffic every (batch, length) is new and RSS grew 400 MB -> 1.7 GB over 300 reranks.
                    # 64 shapes keep it flat (570 -> 640 MB) and were no slower (benchmarks/README.md).
                    "CPU_RUNTIME_CACHE_CAPACITY": "64",
                },
            )
        except Exception as exc:
            raise ModelLoadError(
                f"OpenVINO could not compile {path} ({exc}); delete {path.parent} to rebuild it"
            ) from exc
        self._inputs = {name for port in self._compiled.inputs for name in port.get_names()}
        self._request = self._compiled.create_infer_request()  # the engine serialises forward calls
        self.name = f"openvino-{variant}"
        self.variant = variant
        self.path = path
        # 100 pairs × 200 tokens: bf16 bs 8 2.09 s, bs 16 1.90 s, bs 32 1.65 s; int8 bs 16 1.13 s, bs 32 0.97 s.
        self.preferred_batch_size = 32

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        res = self._request.infer({k: v for k, v in batch.items() if k in self._inputs})
        return np.array(res[self._compiled.output(0)], dtype=np.float32)
