"""The reference backend: the Hugging Face model loaded by sentence-transformers, run in torch."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.backends.model_inputs import select_inputs
from crossrank.backends.torch_pipeline import BatchRunner, settings_for
from crossrank.errors import BackendUnavailableError, ModelLoadError
from crossrank.model_files import ModelInfo


def cuda_available() -> bool:
    """Whether torch sees a GPU; on Linux without a GPU device node, answered without importing torch.

    ``backend="auto"`` asks this on every start, and importing torch costs about a second and
    ~180 MB that the CPU paths never use.
    """
    if "torch" not in sys.modules and sys.platform.startswith("linux"):
        if not any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")):
            return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchBackend:
    """Runs ``*ForSequenceClassification`` in torch (fp32 on CPU, fp16 on CUDA unless told otherwise).

    ``quantize``: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32`` or ``bf16`` (the backend table's
    precisions, checked when a ``Reranker`` is built: ``int8`` is refused there, never run as fp32).

    The model gets the inputs sentence-transformers would give it (the tokenizer's
    ``model_input_names`` that its forward takes), so a RoBERTa / XLM-RoBERTa model never sees type
    ids it has no embedding rows for; the same rule picks the inputs of the ONNX export.
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        device: str | None = None,
        dtype: str = "auto",
        quantize: str = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
    ) -> None:
        try:
            import torch
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise BackendUnavailableError(
                f"{info.name}: backend='torch' needs torch and sentence-transformers: pip install 'crossrank[torch]' "
                "(or load a folder made by `crossrank export`, which runs without them)"
            ) from exc
        try:
            ce = CrossEncoder(
                str(info.path),
                device=device,
                trust_remote_code=trust_remote_code,
                local_files_only=True,
                max_length=max_length,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"could not load {info.name} with sentence-transformers ({type(exc).__name__}: {exc}); "
                "the weights may be truncated or corrupt: re-download the model"
            ) from exc
        model: Any = ce.model
        model.eval()
        self.device = str(ce.device)
        wanted = quantize if quantize != "auto" else dtype
        if wanted == "auto":
            wanted = "fp16" if self.device.startswith("cuda") else "fp32"
        if wanted == "fp16":
            model.half()
        elif wanted == "bf16":
            model.to(torch.bfloat16)
        self.dtype = wanted
        self.name = f"torch-{self.dtype}" + ("" if self.device == "cpu" else f"@{self.device}")
        self._model = model
        self._torch = torch
        tokenizer = getattr(ce, "tokenizer", None)
        declared = getattr(tokenizer, "model_input_names", None)
        config = getattr(model, "config", None)
        types = getattr(config, "type_vocab_size", None)
        self._inputs = select_inputs(
            model.forward,
            tuple(declared) if declared else None,
            types if isinstance(types, int) and not isinstance(types, bool) else None,
        )

        # One copy in per batch, one copy out per call, bucketed shapes (see torch_pipeline).
        self.runner = BatchRunner(torch, model, self.device, self._inputs, settings_for(self.device))

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.runner.run([batch])[0]

    def forward_batches(self, batches: Iterable[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Logits per batch for a whole call, waiting on the device once (``batches`` may be a generator)."""
        return self.runner.run(batches)

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        """The (rows, width) the engine pads a batch to: the length bucket, and rows when compiled."""
        return self.runner.padded_shape(rows, width)
