"""Export a cross-encoder to ONNX once, quantize it to int8, and cache the result on disk.

Variants: ``fp32`` (ONNX), ``int8`` (ONNX Runtime dynamic int8) and ``ov-int8`` (OpenVINO IR with
static int8, built by ``ov_quantize``); ``int8-7bit`` and ``ov-int8-7bit`` are the same with 7-bit
weights, for CPUs without int8 dot-product units (VNNI/AMX), whose u8 x s8 kernels sum pairs of
products into saturating 16-bit integers that full 8-bit weights overflow. A cache entry is keyed by the
model's content fingerprint, the variant and the recipe version, written atomically (temp dir +
rename) with a manifest holding each file's SHA-256, so a half-written or corrupt entry is detected
on the next start and rebuilt instead of crashing inside a runtime. torch is imported only here,
i.e. only when an export is needed.

Which inputs a model takes is read from the model, never assumed: its forward signature, its
tokenizer's ``model_input_names`` and its config's ``type_vocab_size`` decide the export's inputs,
and the compiled model's own input names decide every feed (``model_inputs.model_feed``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from crossrank.backends.model_inputs import (
    read_config,
    select_inputs,
    tokenizer_input_names,
    type_vocab_size,
)
from crossrank.errors import BackendUnavailableError, ExportError
from crossrank.exported import file_sha256, variant_file
from crossrank.model_files import ModelInfo

log = logging.getLogger("crossrank")

EXPORT_FORMAT = 4  # bump when the export recipe changes, to invalidate old cache entries
#: The token inputs crossrank produces for every pair (``scoring.pairs.pad_batch``); a model takes a subset.


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


def entry_dir(info: ModelInfo, variant: str) -> Path:
    return cache_root() / "onnx" / f"{info.fingerprint}-{variant}-v{EXPORT_FORMAT}"


def shipped_onnx(info: ModelInfo) -> Path | None:
    """A model's own fp32 ONNX file (sentence-transformers layout ``onnx/model.onnx``), if it has one."""
    for rel in ("onnx/model.onnx", "model.onnx"):
        p = info.path / rel
        if p.is_file():
            return p
    return None


_MAIN = {
    "fp32": "model.onnx",
    "int8": "model.onnx",
    "int8-7bit": "model.onnx",
    "ov-int8": "model.xml",
    "ov-int8-7bit": "model.xml",
}


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
            if not f.is_file() or want.get("size") != f.stat().st_size or want.get("sha256") != file_sha256(f):
                log.warning("model cache entry %s is corrupt (%s fails its checksum); rebuilding it", d, name)
                return None
        main = d / str(meta["main"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("model cache entry %s has an unreadable manifest; rebuilding it", d)
        return None
    return main


# ---------------------------------------------------------------------------------------------
# Which inputs a model takes, read from the model itself: the export, the ONNX / OpenVINO feeds,
# the NNCF calibration data and the torch backend all follow these rules, so they cannot disagree.
# ---------------------------------------------------------------------------------------------


def _load_for_export(auto: Any, info: ModelInfo, trust_remote_code: bool) -> Any:
    path = str(info.path)
    kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    try:
        return auto.from_pretrained(path, attn_implementation="eager", **kwargs)
    except (ValueError, TypeError) as exc:  # an architecture without an eager attention option
        if "trust_remote_code" in str(exc):
            raise
        return auto.from_pretrained(path, **kwargs)


def _dummy_inputs(model: Any, names: Sequence[str]) -> dict[str, Any]:
    """Two rows of valid token ids, the second padded: traced code sees a real padding mask.

    Ids stay inside the embedding table and type ids are zeros, valid for every ``type_vocab_size``.
    """
    import torch

    config = model.config
    try:
        vocab = int(model.get_input_embeddings().num_embeddings)
    except Exception:  # custom code without get_input_embeddings
        vocab = int(getattr(config, "vocab_size", 0) or 2)
    pad = getattr(config, "pad_token_id", None)
    pad = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    ids[ids == pad] = (pad + 1) % vocab
    mask = torch.ones_like(ids)
    ids[1, 10:] = pad
    mask[1, 10:] = 0
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: values[n] for n in names}


def _export_fp32(info: ModelInfo, out: Path, *, trust_remote_code: bool = False) -> None:
    try:
        import torch
        from transformers import AutoModelForSequenceClassification
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{info.name} is a source model: exporting it to ONNX needs torch and transformers "
            "(pip install 'crossrank[torch]'); or load a folder made by `crossrank export`, which needs neither"
        ) from exc
    try:
        # Eager attention exports as plain MatMul/Softmax, which OpenVINO fuses into one attention
        # kernel; the SDPA export adds IsNaN/Where guards that cost ~20% on both runtimes here.
        model = _load_for_export(AutoModelForSequenceClassification, info, trust_remote_code)
    except Exception as exc:
        if "auto_map" in read_config(info.path) and not trust_remote_code:
            raise ExportError(
                f"{info.name} ships its own model code (auto_map in config.json): pass trust_remote_code=True "
                f"to run it, only for a model you trust ({type(exc).__name__}: {exc})"
            ) from exc
        raise ExportError(f"could not load {info.name} for ONNX export ({exc}); re-download the model") from exc
    model.eval()
    declared = tokenizer_input_names(info.path, trust_remote_code=trust_remote_code)
    names = select_inputs(model.forward, declared, type_vocab_size(info.path))
    dummy = _dummy_inputs(model, names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(  # by name: forward()'s parameter order differs between architectures
                model,
                (),
                str(out),
                kwargs=dummy,
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {info.name}: {exc}") from exc


def export_hidden_state(hf: Any, dummy: dict[str, Any], out: Path) -> None:
    """Export a Hugging Face encoder's ``last_hidden_state`` to ONNX at ``out`` (fp32, opset 17).

    ``dummy`` holds example inputs by name (``input_ids``, ``attention_mask``, optionally
    ``token_type_ids``); batch and sequence are dynamic. The bi-encoder export and the
    late-interaction query graph both run what this writes. Exporter failures propagate; callers
    say what was being exported.
    """
    import torch

    class _Hidden(torch.nn.Module):
        """The transformer's last hidden state only (what pooling or a token projection reads)."""

        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.hf(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in dummy}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            _Hidden(),
            (),
            str(out),
            kwargs=dummy,
            input_names=list(dummy),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize_int8(src: Path, dst: Path, *, reduce_range: bool = False) -> None:
    """Dynamic int8 on the weight MatMuls only, per output channel (activations quantized on the fly).

    Per-channel weights and leaving embeddings (Gather) in fp32 measured the best ranking fidelity
    against torch fp32 on SciFact at the same speed (see benchmarks/README.md). ``reduce_range``:
    7-bit weights, for CPUs without int8 dot-product units, where ONNX Runtime's u8 x s8 kernels
    saturate with 8-bit weights and scramble the ranking.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # onnxruntime's quantizer needs the onnx package, part of the export toolchain
        raise BackendUnavailableError(
            f"ONNX Runtime int8 quantization needs onnx ({exc}): pip install 'crossrank[torch]'"
        ) from exc
    try:
        with _quiet():
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                reduce_range=reduce_range,
            )
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {exc}") from exc


def _build(info: ModelInfo, variant: str, tmp: Path, trust_remote_code: bool) -> None:
    if variant in ("ov-int8", "ov-int8-7bit"):
        from crossrank.backends.ov_quantize import quantize_openvino_int8

        fp32_file = ensure_model_file(info, "fp32", trust_remote_code=trust_remote_code)
        quantize_openvino_int8(info, fp32_file, tmp / "model.xml", overflow_fix=variant == "ov-int8-7bit")
        return
    own = shipped_onnx(info)
    fp32 = tmp / "fp32.onnx"
    if own is not None:
        shutil.copyfile(own, fp32)
    else:
        _export_fp32(info, fp32, trust_remote_code=trust_remote_code)
    if variant in ("int8", "int8-7bit"):
        _quantize_int8(fp32, tmp / "model.onnx", reduce_range=variant == "int8-7bit")
        fp32.unlink()
    else:
        fp32.rename(tmp / "model.onnx")


def ensure_model_file(info: ModelInfo, variant: str, *, trust_remote_code: bool = False) -> Path:
    """Path to a ready model file of ``variant`` (a key of ``_MAIN``), building it if needed.

    ``trust_remote_code`` lets the export run model code shipped in the model directory (``auto_map``).
    An exported folder (``crossrank export``) is never built on: its own file is returned, or
    :class:`~crossrank.errors.NotExportedError` says which variants it holds.
    """
    if info.exported is not None:
        return variant_file(info.path, info.exported, variant, name=info.name)
    d = entry_dir(info, variant)
    cached = check_entry(d)
    if cached is not None:
        return cached
    d.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.info("exporting %s (%s); this happens once per model", info.name, variant)
    tmp = Path(tempfile.mkdtemp(prefix=d.name + ".", dir=d.parent))
    try:
        _build(info, variant, tmp, trust_remote_code)
        files = {
            f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)} for f in sorted(tmp.iterdir()) if f.is_file()
        }
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
