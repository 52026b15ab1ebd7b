"""What ``backend="auto"`` runs, and the fallback when a model cannot be exported or quantized there.

The first choice is the fast path for this machine (``resolve_backend``); if building it fails —
an architecture the exporter or the quantizer cannot handle — the next one in a fixed order is
tried: OpenVINO int8 -> OpenVINO bf16 (where native) -> OpenVINO fp32 -> ONNX Runtime int8 ->
torch. One warning says what failed and what runs instead, and the choice is remembered in the
cache (keyed by the model's content hash and the requested precision) so the next start goes
straight to what works.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from crossrank.model_files import ModelInfo

log = logging.getLogger("crossrank")

Choice = tuple[str, str]  # (backend, quantize)


def chain(first: str, quantize: str) -> list[Choice]:
    """The choices to try in order, starting at ``first`` (the backend ``auto`` resolved to)."""
    from crossrank.backends.openvino_backend import cpu_has_bf16, openvino_installed

    order: list[Choice] = []
    if openvino_installed():
        if quantize == "auto":
            order += [("openvino", "auto"), ("openvino", "int8")]
            order += [("openvino", "bf16")] if cpu_has_bf16() else []
            order += [("openvino", "fp32")]
        else:
            order += [("openvino", quantize)]
    order += [("onnx", "int8" if quantize in ("auto", "bf16") else quantize), ("torch", "fp32")]
    start = next((i for i, (b, _) in enumerate(order) if b == first), len(order) - 1)
    out: list[Choice] = []
    for c in order[start:]:
        if c not in out:
            out.append(c)
    return out


def _memory_file(info: ModelInfo, quantize: str) -> Path:
    from crossrank.backends.export import cache_root

    return cache_root() / "auto" / f"{info.fingerprint}-{quantize}.json"


def remembered(info: ModelInfo, quantize: str) -> Choice | None:
    """The choice an earlier start fell back to for this model, if any."""
    try:
        data = json.loads(_memory_file(info, quantize).read_text())
        return str(data["backend"]), str(data["quantize"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(info: ModelInfo, quantize: str, choice: Choice, failures: list[str]) -> None:
    """Record a fallback so later starts skip the paths that failed (best effort: a read-only cache is fine)."""
    path = _memory_file(info, quantize)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"backend": choice[0], "quantize": choice[1], "model": info.name, "failed": failures})
        )
        tmp.replace(path)
    except OSError as exc:
        log.debug("could not remember the backend choice for %s: %s", info.name, exc)
