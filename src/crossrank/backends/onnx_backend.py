"""The fast CPU path: ONNX Runtime, int8 by default, with no torch import when scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossrank.backends.compiled import CompiledBackend
from crossrank.backends.openvino_backend import cpu_has_int8_dot
from crossrank.errors import InvalidArgumentError


def int8_model_variant() -> str:
    """The int8 build this CPU runs: ``int8``, or ``int8-7bit`` where it has no int8 dot-product units.

    Without VNNI/AMX, ONNX Runtime's u8 x s8 kernels sum pairs of products into saturating 16-bit
    integers; full 8-bit weights overflow them and scramble scores, 7-bit weights do not.
    """
    return "int8" if cpu_has_int8_dot() else "int8-7bit"


class OnnxBackend(CompiledBackend):
    """An ONNX Runtime session over an exported (and by default int8-quantized) cross-encoder.

    The feed holds exactly the session's own inputs (a DistilBERT or ModernBERT export has no
    ``token_type_ids``), with type ids zeroed for models that have a single token type.
    ``trust_remote_code`` lets the one-off export run model code shipped in the model directory.
    """

    prefix = "onnx"
    runtime_module = "onnxruntime"
    missing = "backend='onnx' needs onnxruntime: pip install onnxruntime (it is a crossrank dependency)"
    model_kind = "ONNX"
    load_failure = "ONNX Runtime could not load"
    # Small length-sorted batches measured fastest here and keep the arena (peak RSS) small:
    # 100 pairs × 200 tokens, int8: bs 8 2.14 s / 295 MB, bs 16 2.28 s / 415 MB, bs 32 2.45 s / 660 MB.
    preferred_batch_size = 8

    def _variant(self, quantize: str) -> str:
        if quantize == "bf16":
            raise InvalidArgumentError("quantize='bf16' is for backend='openvino'; ONNX runs int8 or fp32")
        return "fp32" if quantize == "fp32" else "int8"

    def _int8_file(self) -> str:
        return int8_model_variant()

    def _load(self, runtime: Any, path: Path, variant: str, threads: int) -> None:
        opts = runtime.SessionOptions()
        opts.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = runtime.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._session = runtime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _input_names(self) -> list[str]:
        return [i.name for i in self._session.get_inputs()]

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self._session.run(["logits"], feed)
        return np.asarray(logits, dtype=np.float32)
