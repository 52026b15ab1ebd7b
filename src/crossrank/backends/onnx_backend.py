"""The fast CPU path: ONNX Runtime, int8 by default, with no torch import when scoring."""

from __future__ import annotations

import numpy as np

from crossrank.backends import default_threads
from crossrank.backends.export import ensure_model_file, entry_dir
from crossrank.backends.model_inputs import check_input_names, model_feed, token_types_usable
from crossrank.backends.openvino_backend import cpu_has_int8_dot
from crossrank.errors import BackendUnavailableError, InvalidArgumentError, ModelLoadError
from crossrank.model_files import ModelInfo


def int8_model_variant() -> str:
    """The int8 build this CPU runs: ``int8``, or ``int8-7bit`` where it has no int8 dot-product units.

    Without VNNI/AMX, ONNX Runtime's u8 x s8 kernels sum pairs of products into saturating 16-bit
    integers; full 8-bit weights overflow them and scramble scores, 7-bit weights do not.
    """
    return "int8" if cpu_has_int8_dot() else "int8-7bit"


class OnnxBackend:
    """An ONNX Runtime session over an exported (and by default int8-quantized) cross-encoder.

    The feed holds exactly the session's own inputs (a DistilBERT or ModernBERT export has no
    ``token_type_ids``), with type ids zeroed for models that have a single token type.
    ``trust_remote_code`` lets the one-off export run model code shipped in the model directory.
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        quantize: str = "auto",
        num_threads: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend='onnx' needs onnxruntime: pip install onnxruntime (it is a crossrank dependency)"
            ) from exc
        if quantize == "bf16":
            raise InvalidArgumentError("quantize='bf16' is for backend='openvino'; ONNX runs int8 or fp32")
        variant = "fp32" if quantize == "fp32" else "int8"
        file_variant = int8_model_variant() if variant == "int8" else "fp32"
        path = ensure_model_file(info, file_variant, trust_remote_code=trust_remote_code)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = num_threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(
                f"ONNX Runtime could not load {path} ({exc}); delete {entry_dir(info, file_variant)} to rebuild it"
            ) from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        check_input_names(self._inputs, f"the ONNX model {path}")
        self._zero_types = not token_types_usable(info.path)
        self.path = path
        self.variant = variant
        self.name = f"onnx-{variant}"
        # Small length-sorted batches measured fastest here and keep the arena (peak RSS) small:
        # 100 pairs × 200 tokens, int8: bs 8 2.14 s / 295 MB, bs 16 2.28 s / 415 MB, bs 32 2.45 s / 660 MB.
        self.preferred_batch_size = 8

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = model_feed(batch, self._inputs, zero_token_types=self._zero_types)
        (logits,) = self._session.run(["logits"], feed)
        return np.asarray(logits, dtype=np.float32)
