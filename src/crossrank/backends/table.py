"""The one table of scoring backends, their precisions and the user-facing choices.

``auto``, the CLI's ``--backend`` / ``--quantize`` choices, the benchmark's methods and the error
messages are all read from here, so adding a backend or a precision is one edit in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendSpec:
    """One runtime crossrank can score with.

    ``precisions`` are the ``quantize=`` values it accepts (besides ``auto``); ``extra`` is the pip
    extra that installs it (``None``: a core dependency); ``module`` holds its backend class.
    """

    name: str
    description: str
    precisions: tuple[str, ...]
    extra: str | None
    module: str
    cls: str


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "torch",
            "PyTorch via sentence-transformers: the reference; fp16 on CUDA",
            ("fp32", "bf16"),
            None,
            "crossrank.backends.torch_backend",
            "TorchBackend",
        ),
        BackendSpec(
            "onnx",
            "ONNX Runtime on CPU: dynamic int8 or fp32",
            ("int8", "fp32"),
            None,
            "crossrank.backends.onnx_backend",
            "OnnxBackend",
        ),
        BackendSpec(
            "openvino",
            "OpenVINO on CPU: static int8, bf16 or fp32",
            ("int8", "bf16", "fp32"),
            "openvino",
            "crossrank.backends.openvino_backend",
            "OpenVinoBackend",
        ),
    )
}

BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)
QUANTIZE_CHOICES: tuple[str, ...] = ("auto", "int8", "bf16", "fp32")

# Benchmark methods: name -> (backend, quantize). "st" (sentence-transformers' own CrossEncoder) is
# the baseline every table compares against; it is not a crossrank backend.
BENCH_METHODS: dict[str, tuple[str, str]] = {
    "auto": ("auto", "auto"),  # what a user gets by default: measured per CPU (scoring/tuning.py)
    "torch": ("torch", "fp32"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-int8": ("openvino", "int8"),
}
