"""Export a cross-encoder to ONNX once, quantize it to int8, and cache the result on disk.

Variants: ``fp32`` (ONNX), ``int8`` (ONNX Runtime dynamic int8) and ``ov-int8`` (OpenVINO IR with
static int8, built by ``ov_quantize``). A cache entry is keyed by the model's content fingerprint,
the variant and the recipe version, written atomically (temp dir + rename) with a manifest holding
each file's SHA-256, so a half-written or corrupt entry is detected on the next start and rebuilt
instead of crashing inside a runtime. torch is imported only here, i.e. only when an export is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossrank.errors import BackendUnavailableError, ExportError
from crossrank.model_files import ModelInfo

log = logging.getLogger("crossrank")

EXPORT_FORMAT = 3  # bump when the export recipe changes, to invalidate old cache entries
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters print tracer warnings and root-logger advice that mean nothing to our users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def cache_root() -> Path:
    env = os.environ.get("CROSSRANK_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("crossrank"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def entry_dir(info: ModelInfo, variant: str) -> Path:
    return cache_root() / "onnx" / f"{info.fingerprint}-{variant}-v{EXPORT_FORMAT}"


def shipped_onnx(info: ModelInfo) -> Path | None:
    """A model's own fp32 ONNX file (sentence-transformers layout ``onnx/model.onnx``), if it has one."""
    for rel in ("onnx/model.onnx", "model.onnx"):
        p = info.path / rel
        if p.is_file():
            return p
    return None


_MAIN = {"fp32": "model.onnx", "int8": "model.onnx", "ov-int8": "model.xml"}


def check_entry(d: Path) -> Path | None:
    """The entry's main model file if the entry is complete and intact, else None."""
    manifest = d / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text())
        files: dict[str, dict[str, object]] = meta["files"]
        for name, want in files.items():
            f = d / name
            if not f.is_file() or want.get("size") != f.stat().st_size or want.get("sha256") != _sha256(f):
                log.warning("model cache entry %s is corrupt (%s fails its checksum); rebuilding it", d, name)
                return None
        main = d / str(meta["main"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("model cache entry %s has an unreadable manifest; rebuilding it", d)
        return None
    return main


def _load_for_export(auto: Any, info: ModelInfo) -> Any:
    path = str(info.path)
    try:
        return auto.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    except (ValueError, TypeError):  # an architecture without an eager attention option
        return auto.from_pretrained(path, local_files_only=True)


def _export_fp32(info: ModelInfo, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForSequenceClassification
    except ImportError as exc:
        raise BackendUnavailableError(
            "exporting to ONNX needs torch and transformers (pip install torch transformers), "
            "or a model directory that ships onnx/model.onnx"
        ) from exc
    try:
        # Eager attention exports as plain MatMul/Softmax, which OpenVINO fuses into one attention
        # kernel; the SDPA export adds IsNaN/Where guards that cost ~20% on both runtimes here.
        model = _load_for_export(AutoModelForSequenceClassification, info)
    except Exception as exc:
        raise ExportError(f"could not load {info.name} for ONNX export ({exc}); re-download the model") from exc
    model.eval()
    import inspect

    names = [n for n in _INPUTS if n in inspect.signature(model.forward).parameters]
    dummy = tuple(torch.ones((2, 16), dtype=torch.long) for _ in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(
                model,
                dummy,
                str(out),
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {info.name}: {exc}") from exc


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 on the weight MatMuls only, per output channel (activations quantized on the fly).

    Per-channel weights and leaving embeddings (Gather) in fp32 measured the best ranking fidelity
    against torch fp32 on SciFact at the same speed (see benchmarks/README.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet():
            quantize_dynamic(
                str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
            )
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {exc}") from exc


def _build(info: ModelInfo, variant: str, tmp: Path) -> None:
    if variant == "ov-int8":
        from crossrank.backends.ov_quantize import quantize_openvino_int8

        quantize_openvino_int8(info, ensure_model_file(info, "fp32"), tmp / "model.xml")
        return
    own = shipped_onnx(info)
    fp32 = tmp / "fp32.onnx"
    if own is not None:
        shutil.copyfile(own, fp32)
    else:
        _export_fp32(info, fp32)
    if variant == "int8":
        _quantize_int8(fp32, tmp / "model.onnx")
        fp32.unlink()
    else:
        fp32.rename(tmp / "model.onnx")


def ensure_model_file(info: ModelInfo, variant: str) -> Path:
    """Path to a ready model file of ``variant`` ("fp32", "int8" or "ov-int8"), building it if needed."""
    d = entry_dir(info, variant)
    cached = check_entry(d)
    if cached is not None:
        return cached
    d.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.info("exporting %s (%s); this happens once per model", info.name, variant)
    tmp = Path(tempfile.mkdtemp(prefix=d.name + ".", dir=d.parent))
    try:
        _build(info, variant, tmp)
        files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir()) if f.is_file()}
        meta = {
            "source": info.name,
            "fingerprint": info.fingerprint,
            "variant": variant,
            "format": EXPORT_FORMAT,
            "main": _MAIN[variant],
            "files": files,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=2))
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
        try:
            tmp.rename(d)
        except OSError:
            if check_entry(d) is None:  # lost a race to a broken writer: take ours
                shutil.rmtree(d, ignore_errors=True)
                tmp.rename(d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s export of %s ready in %.1fs at %s", variant, info.name, time.perf_counter() - t0, d)
    return d / _MAIN[variant]
