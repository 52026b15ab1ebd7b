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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import BackendUnavailableError, ExportError
from crossrank.model_files import ModelInfo, effective_max_length

CALIBRATION_PAIRS = 96
_BATCH = 4


def calibration_pairs() -> list[tuple[str, str]]:
    """The (query, passage) pairs the int8 calibration runs: bundled demo questions and passages.

    :data:`CALIBRATION_PAIRS` pairs, then a third of them again with two passages joined, so
    activation ranges cover full-length sequences. An exported folder's manifest records them
    (count and SHA-256), so the calibration behind its int8 graphs is known.
    """
    from crossrank import demo_data

    queries = demo_data.queries()
    passages = demo_data.passages()
    pairs = [(queries[i % len(queries)], passages[(i * 7) % len(passages)]) for i in range(CALIBRATION_PAIRS)]
    pairs += [(q, f"{p} {passages[(i * 11 + 3) % len(passages)]}") for i, (q, p) in enumerate(pairs[::3])]
    return pairs


def calibration_batches(info: ModelInfo, input_names: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Padded (query, passage) batches from the bundled demo data, at the model's own max length.

    Each batch holds exactly ``input_names`` (the model's own inputs; default: all token inputs),
    built as the backends build their feeds: NNCF hands a batch to OpenVINO as is, and OpenVINO
    rejects a name its model lacks (DistilBERT, ModernBERT and DeBERTa-v3 exports have no
    ``token_type_ids``).
    """
    from crossrank.backends.model_inputs import TOKEN_INPUTS, model_feed, token_types_usable
    from crossrank.scoring.pairs import PairEncoder, load_tokenizer

    enc = PairEncoder(load_tokenizer(info.path), effective_max_length(info, None))
    pairs = calibration_pairs()
    names = list(input_names) if input_names is not None else list(TOKEN_INPUTS)
    zero_types = not token_types_usable(info.path)
    batches = []
    for i in range(0, len(pairs), _BATCH):
        chunk = pairs[i : i + _BATCH]
        ids, types = [], []
        for q, p in chunk:
            e = enc.encode(q, [p])
            ids += e.ids
            types += e.types
        batches.append(model_feed(enc.pad(ids, types), names, zero_token_types=zero_types))
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


def quantize_openvino_int8(info: ModelInfo, onnx_fp32: Path, out_xml: Path, *, overflow_fix: bool = False) -> None:
    """Quantize ``onnx_fp32`` to a static-int8 OpenVINO IR at ``out_xml``, calibrated on the demo data.

    ``overflow_fix``: weights in 7 bits in every layer (NNCF's overflow fix). CPUs without int8
    dot-product units (VNNI/AMX) multiply u8 x s8 pairs into saturating 16-bit sums; full 8-bit
    weights overflow there and scramble scores, so those CPUs get this build.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            f"building the OpenVINO int8 model needs openvino and nncf ({exc}): pip install 'crossrank[torch,openvino]'"
        ) from exc
    from crossrank.backends.model_inputs import port_names

    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        model = ov.Core().read_model(str(onnx_fp32))
        batches = calibration_batches(info, port_names(model.inputs))
        advanced: dict[str, Any] = {}
        if overflow_fix:
            advanced["advanced_parameters"] = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)
        # nncf draws progress bars on stdout; an export is a one-off, and our callers may parse stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(batches),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=10_000,
                ignored_scope=nncf.IgnoredScope(names=_attention_matmuls(model)),
                **advanced,
            )
        ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    except Exception as exc:
        raise ExportError(f"OpenVINO int8 quantization of {info.name} failed: {exc}") from exc
