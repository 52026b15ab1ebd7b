"""What the ONNX Runtime and OpenVINO backends share: an exported model file, run on CPU, fed its own inputs.

A subclass names its runtime and says how it picks a precision, which int8 build it runs, how it
loads the file and how it runs a feed; exporting the file on first use, the load error, the input
name check and the feed (type ids zeroed for models with a single token type) are the same code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.backends import default_threads
from crossrank.backends.export import ensure_model_file
from crossrank.backends.model_inputs import check_input_names, model_feed, token_types_usable
from crossrank.errors import BackendUnavailableError, ModelLoadError
from crossrank.model_files import ModelInfo


class CompiledBackend:
    """An exported cross-encoder file run by a CPU runtime; its backend name is ``<prefix>-<variant>``.

    ``trust_remote_code`` lets the one-off export run model code shipped in the model directory.
    """

    prefix: str  # the backend's name before the variant: onnx, openvino
    runtime_module: str  # what to import
    missing: str  # the error when that import fails
    model_kind: str  # the model file, in messages: "the <model_kind> model <path>"
    load_failure: str  # "<load_failure> <path> (why)": the runtime could not take the file
    preferred_batch_size: int

    def __init__(
        self,
        info: ModelInfo,
        *,
        quantize: str = "auto",
        num_threads: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.info = info
        try:
            runtime = importlib.import_module(self.runtime_module)
        except ImportError as exc:
            raise BackendUnavailableError(self.missing) from exc
        variant = self._variant(quantize)
        file_variant = self._int8_file() if variant == "int8" else "fp32"
        path = ensure_model_file(info, file_variant, trust_remote_code=trust_remote_code)
        try:
            self._load(runtime, path, variant, num_threads or default_threads())
        except Exception as exc:
            raise ModelLoadError(f"{self.load_failure} {path} ({exc}); delete {path.parent} to rebuild it") from exc
        self._inputs = self._input_names()
        check_input_names(self._inputs, f"the {self.model_kind} model {path}")
        self._zero_types = not token_types_usable(info.path)
        self.path = path
        self.variant = variant
        self.name = f"{self.prefix}-{variant}"

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(model_feed(batch, self._inputs, zero_token_types=self._zero_types))

    # ------------------------------------------------------------------ what each runtime says
    def _variant(self, quantize: str) -> str:
        """The precision ``quantize`` means here (int8, bf16 or fp32); refuses one this runtime cannot run."""
        raise NotImplementedError

    def _int8_file(self) -> str:
        """The export variant (see :mod:`crossrank.backends.export`) the int8 precision runs on this CPU."""
        raise NotImplementedError

    def _load(self, runtime: Any, path: Path, variant: str, threads: int) -> None:
        """Make the model runnable from ``path`` (``runtime`` is the imported runtime module)."""
        raise NotImplementedError

    def _input_names(self) -> list[str]:
        """The loaded model's input names."""
        raise NotImplementedError

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, num_labels) as float32 for a feed of exactly :meth:`_input_names`."""
        raise NotImplementedError
