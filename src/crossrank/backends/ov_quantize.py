"""Static int8 for OpenVINO: NNCF post-training quantization, calibrated on bundled text.

Why static int8 in OpenVINO rather than ONNX Runtime's dynamic int8: OpenVINO fuses the quantized
matmuls into VNNI kernels with no per-call activation quantization, and runs attention as one fused
kernel. The attention matmuls themselves (activation × activation) are left unquantized: quantizing
them measured slower and less faithful here. Calibration uses the packaged demo corpus (general
web-style passages and questions), so no user data and no download is needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import BackendUnavailableError, ExportError
from crossrank.model_files import ModelInfo, effective_max_length

CALIBRATION_PAIRS = 96
_BATCH = 4


def calibration_batches(info: ModelInfo) -> list[dict[str, np.ndarray]]:
    """Padded (query, passage) batches from the bundled demo data, at the model's own max length."""
    from crossrank import demo_data
    from crossrank.scoring.pairs import PairEncoder, load_tokenizer

    queries = demo_data.queries()
    passages = demo_data.passages()
    enc = PairEncoder(load_tokenizer(info.path), effective_max_length(info, None))
    pairs = [(queries[i % len(queries)], passages[(i * 7) % len(passages)]) for i in range(CALIBRATION_PAIRS)]
    # Longer inputs too: two passages joined, so activation ranges cover full-length sequences.
    pairs += [(q, f"{p} {passages[(i * 11 + 3) % len(passages)]}") for i, (q, p) in enumerate(pairs[::3])]
    batches = []
    for i in range(0, len(pairs), _BATCH):
        chunk = pairs[i : i + _BATCH]
        ids, types = [], []
        for q, p in chunk:
            e = enc.encode(q, [p])
            ids += e.ids
            types += e.types
        batches.append(enc.pad(ids, types))
    return batches


def _attention_matmuls(model: Any) -> list[str]:
    """MatMuls with no constant (weight) input: query·key and attention·value."""

    def constant(node: Any) -> bool:
        while node.get_type_name() == "Convert":
            node = node.input(0).get_source_output().get_node()
        return bool(node.get_type_name() == "Constant")

    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "MatMul" and not any(constant(i.get_source_output().get_node()) for i in op.inputs())
    ]


def quantize_openvino_int8(info: ModelInfo, onnx_fp32: Path, out_xml: Path) -> None:
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            "OpenVINO int8 needs openvino and nncf: pip install 'crossrank[openvino]'"
        ) from exc
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        model = ov.Core().read_model(str(onnx_fp32))
        # nncf draws progress bars on stdout; an export is a one-off, and our callers may parse stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(calibration_batches(info)),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=10_000,
                ignored_scope=nncf.IgnoredScope(names=_attention_matmuls(model)),
            )
        ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    except Exception as exc:
        raise ExportError(f"OpenVINO int8 quantization of {info.name} failed: {exc}") from exc
