"""OpenVINO on CPU: static int8 (VNNI), bf16 or fp32.

``quantize``: ``"int8"`` runs the NNCF-quantized IR (``ov_quantize``; 7-bit weights on CPUs without
int8 dot-product units, see :func:`int8_model_variant`), with the unquantized ops in bf16 where the
CPU has bf16 units; ``"bf16"`` and ``"fp32"`` run the fp32 ONNX export at that
precision; ``"auto"`` takes int8 when the CPU has int8 dot-product units (VNNI/AMX) and NNCF is
installed, else bf16 where native, else fp32. Numbers behind this: benchmarks/README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossrank import cpuinfo
from crossrank.backends.compiled import CompiledBackend
from crossrank.backends.model_inputs import port_names
from crossrank.errors import InvalidArgumentError


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units, within the ISA limit: :func:`crossrank.cpuinfo.has_native_bf16`."""
    return cpuinfo.has_native_bf16()


def cpu_has_int8_dot() -> bool:
    """int8 dot-product units, within the ISA limit: :func:`crossrank.cpuinfo.has_int8_dot`."""
    return cpuinfo.has_int8_dot()


def compile_properties(variant: str, threads: int) -> dict[str, str | int]:
    """OpenVINO CPU compile settings for a ``variant`` (``fp32``, ``bf16``, ``int8``) on ``threads`` threads.

    The ops an int8 model leaves unquantized (softmax, layer norm, attention) run in bf16 where
    the CPU has bf16 units. Shared with ``crossrank bench --roofline`` so its floor is compiled the
    way the backend compiles models.
    """
    return {
        "INFERENCE_PRECISION_HINT": "f32" if variant == "fp32" or not cpu_has_bf16() else "bf16",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        # Kernels are cached per input shape (default 5,000 shapes, ~4 MB each here): with real
        # traffic every (batch, length) is new and RSS grew 400 MB -> 1.7 GB over 300 reranks.
        # 64 shapes keep it flat (benchmarks/README.md).
        "CPU_RUNTIME_CACHE_CAPACITY": "64",
    }


def int8_model_variant() -> str:
    """The int8 build this CPU runs: ``ov-int8``, or ``ov-int8-7bit`` where it has no int8 dot-product units.

    Without VNNI/AMX, OpenVINO multiplies u8 x s8 pairs into saturating 16-bit sums, and full 8-bit
    weights overflow them; the 7-bit build (NNCF's overflow fix) keeps scores in order there.
    """
    return "ov-int8" if cpu_has_int8_dot() else "ov-int8-7bit"


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def nncf_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def openvino_variant(quantize: str, *, int8_ready: bool | None = None) -> str:
    """The precision ``quantize`` means on this machine: int8, bf16 or fp32.

    ``int8_ready``: whether an int8 model can be had (default: NNCF is installed to build one; an
    exported folder says by holding one).
    """
    if quantize == "auto":
        if cpu_has_int8_dot() and (nncf_installed() if int8_ready is None else int8_ready):
            return "int8"
        return "bf16" if cpu_has_bf16() else "fp32"
    return quantize


class OpenVinoBackend(CompiledBackend):
    """A compiled OpenVINO model; the feed holds exactly its inputs (OpenVINO rejects any other name).

    ``trust_remote_code`` lets the one-off ONNX export run model code shipped in the model directory.
    """

    prefix = "openvino"
    runtime_module = "openvino"
    missing = "backend='openvino' needs OpenVINO: pip install 'crossrank[openvino]'"
    model_kind = "OpenVINO"
    load_failure = "OpenVINO could not compile"
    # 100 pairs × 200 tokens: bf16 bs 8 2.09 s, bs 16 1.90 s, bs 32 1.65 s; int8 bs 16 1.13 s, bs 32 0.97 s.
    preferred_batch_size = 32

    def _variant(self, quantize: str) -> str:
        held = self.info.exported  # an exported folder: int8 is there or not; nothing is built
        variant = openvino_variant(quantize, int8_ready=None if held is None else int8_model_variant() in held)
        if variant == "bf16" and not cpu_has_bf16():
            raise InvalidArgumentError(
                "quantize='bf16' needs a CPU with bf16 units (AVX-512 BF16 or AMX); use quantize='int8' or 'fp32'"
            )
        return variant

    def _int8_file(self) -> str:
        return int8_model_variant()

    def _load(self, runtime: Any, path: Path, variant: str, threads: int) -> None:
        core = runtime.Core()
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_properties(variant, threads))
        self._request = self._compiled.create_infer_request()  # the engine serialises forward calls

    def _input_names(self) -> list[str]:
        return port_names(self._compiled.inputs)

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        res = self._request.infer(feed)
        return np.array(res[self._compiled.output(0)], dtype=np.float32)
