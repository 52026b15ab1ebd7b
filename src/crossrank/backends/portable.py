"""Portable model folders: ``crossrank export`` writes one; which CPU paths one serves here is decided here.

A folder holds a cross-encoder's tokenizer, config and ready-made graphs (layout:
:mod:`crossrank.exported`), so an install without torch — ``pip install crossrank`` — scores with
it: ``Reranker(DIR)`` tunes among the paths the folder holds and this install can run, and never
builds anything. The graphs are the very files the full install builds into its cache
(:func:`crossrank.backends.export.ensure_model_file`), copied with a manifest that records the source
model and its content hash, the crossrank version, the calibration, the head and scale, the max
length and the family, plus each file's SHA-256 (checked when it is loaded).

Causal-LM rerankers are not exportable: their score is one vocabulary column of a generative LM,
which these CPU paths do not run; they need ``crossrank[torch]``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.backends.export import EXPORT_FORMAT, ensure_model_file
from crossrank.backends.onnx_backend import int8_model_variant as onnx_int8_variant
from crossrank.backends.openvino_backend import int8_model_variant as ov_int8_variant
from crossrank.backends.openvino_backend import (
    openvino_installed,
    openvino_variant,
)
from crossrank.errors import InvalidArgumentError, NotExportedError, UnsupportedModelError
from crossrank.exported import (
    DEFAULT_VARIANTS,
    FOLDER_FORMAT,
    MANIFEST,
    VARIANT_FILES,
    VARIANT_PATHS,
    describe_held,
    file_sha256,
)
from crossrank.model_files import ModelInfo, inspect_model, resolve_model_dir

# Source files copied beside the graphs: tokenizer, config and the model's own notes (license terms
# live there). Weights and model code are not: the graphs replace them.
_COPY_SUFFIXES = (".json", ".txt", ".model", ".md")
_SKIP_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json", MANIFEST)


# ------------------------------------------------------------------------------------------------
# Which paths an exported folder serves on this CPU
# ------------------------------------------------------------------------------------------------


def file_variant(info: ModelInfo, backend: str, quantize: str) -> str | None:
    """The file variant ``backend`` / ``quantize`` would load on this CPU (None: torch, which loads weights).

    ``quantize="auto"`` resolves as the backend resolves it, int8 counting as available where the
    folder holds this CPU's int8 build.
    """
    if backend == "onnx":
        return "fp32" if quantize == "fp32" else onnx_int8_variant()
    if backend == "openvino":
        held = info.exported or ()
        precision = openvino_variant(quantize, int8_ready=ov_int8_variant() in held)
        return ov_int8_variant() if precision == "int8" else "fp32"
    return None


def holds(info: ModelInfo, backend: str, quantize: str) -> bool:
    """Whether the exported folder ``info`` has the file ``backend`` / ``quantize`` runs on this CPU."""
    variant = file_variant(info, backend, quantize)
    return variant is not None and info.exported is not None and variant in info.exported


def check_request(info: ModelInfo, backend: str, quantize: str | None, device: str | None) -> None:
    """Refuse, when a ``Reranker`` is made, a request the exported folder ``info`` cannot serve.

    ``quantize=None`` checks the backend and device only.

    Raises:
        NotExportedError: torch or a GPU (the folder has no weights), or a backend / precision whose
            graph the folder lacks; the message lists what it holds.
    """
    assert info.exported is not None
    gpu = device is not None and not device.startswith("cpu")
    if backend == "torch" or gpu:
        raise NotExportedError(
            f"{info.name} is an exported folder: it holds CPU graphs ({describe_held(info.exported)}), no torch "
            f"weights, so {'device=' + repr(device) if gpu else 'backend=' + repr(backend)} cannot run it. Load "
            "the source model for torch or a GPU (pip install 'crossrank[torch]')"
        )
    if backend in ("onnx", "openvino") and quantize is not None:
        variant = file_variant(info, backend, quantize)
        if variant is not None and variant not in info.exported:
            from crossrank.exported import variant_file

            variant_file(info.path, info.exported, variant, name=info.name)  # raises, saying what it holds


def first_backend(info: ModelInfo) -> str:
    """The backend ``auto`` starts from for an exported folder (tuning then measures what it holds)."""
    if openvino_installed() and holds(info, "openvino", "int8"):
        return "openvino"
    return "onnx" if holds(info, "onnx", "int8") or holds(info, "onnx", "fp32") else "openvino"


def nothing_runs(info: ModelInfo) -> NotExportedError:
    """The error for an exported folder none of whose graphs this install can run on this CPU."""
    assert info.exported is not None
    hint = ""
    if not openvino_installed() and any(v.startswith("ov-") or v == "fp32" for v in info.exported):
        hint = " Install OpenVINO to run its OpenVINO graphs: pip install 'crossrank[openvino]'."
    return NotExportedError(
        f"{info.name} holds {describe_held(info.exported)}; none of them runs here (this CPU needs "
        f"{onnx_int8_variant()} or fp32 for ONNX Runtime, {ov_int8_variant()} or fp32 for OpenVINO).{hint} "
        f"Or export again: crossrank export SOURCE --out DIR (default variants: {','.join(DEFAULT_VARIANTS)})"
    )


# ------------------------------------------------------------------------------------------------
# Writing a folder
# ------------------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What :func:`export_model` wrote: the folder, each variant's size and build time, and the manifest."""

    out: Path
    source: str
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file())

    def table(self) -> str:
        """The variants as a Markdown table, with what each runs and its size."""
        lines = ["| variant | file | runs | MB | build s |", "|---|---|---|---:|---:|"]
        for v, meta in self.variants.items():
            runs = ", ".join(meta["runs"])
            lines.append(f"| {v} | {meta['file']} | {runs} | {meta['bytes'] / 1e6:.1f} | {meta['seconds']:.1f} |")
        lines.append(f"\n{self.out}: {self.total_bytes / 1e6:.1f} MB in all, exported in {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "source": self.source,
            "seconds": round(self.seconds, 2),
            "bytes": self.total_bytes,
            "variants": self.variants,
            "manifest": self.manifest,
        }


def parse_variants(text: str | Sequence[str]) -> tuple[str, ...]:
    """``fp32,int8,...`` (or ``all``) as variants in layout order; an unknown name is an error listing the known."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items == ["all"]:
        return tuple(VARIANT_FILES)
    unknown = [v for v in items if v not in VARIANT_FILES]
    if unknown or not items:
        raise InvalidArgumentError(
            f"variants {unknown or items!r}: choose from {', '.join(VARIANT_FILES)} (comma list), or 'all'"
        )
    return tuple(v for v in VARIANT_FILES if v in items)


def _require_toolchain(variants: Sequence[str]) -> None:
    """Fail before anything is written when a package the export needs is missing, naming its extra."""
    import importlib.util

    from crossrank.errors import missing_extra

    needed = {"torch": "torch", "transformers": "torch", "onnx": "torch"}
    if any(v.startswith("ov-") for v in variants):
        needed |= {"openvino": "openvino", "nncf": "torch"}
    for module, extra in needed.items():
        if importlib.util.find_spec(module) is None:
            raise missing_extra(f"{module} (needed by crossrank export)", extra)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_out(out: Path, source: Path, overwrite: bool) -> None:
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise InvalidArgumentError(f"--out {out} is the source model's folder or inside it: export to a new folder")
    if out.exists():
        if not out.is_dir():
            raise InvalidArgumentError(f"--out {out} is a file: name a new folder")
        if any(out.iterdir()) and not (overwrite and (out / MANIFEST).is_file()):
            hint = " (--force replaces only an earlier export)" if overwrite else ", or --force to replace an export"
            raise InvalidArgumentError(f"--out {out} exists and is not empty: name a new folder{hint}")


def _source_files(path: Path) -> dict[str, str]:
    """SHA-256 of every file of the source model that decides its scores (weights, config, tokenizer)."""
    out = {}
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".onnx") or f.suffix in _COPY_SUFFIXES[:3]):
            out[f.name] = file_sha256(f)
    return out


def _head(info: ModelInfo, config: dict[str, Any]) -> dict[str, Any]:
    st = config.get("sentence_transformers") if isinstance(config.get("sentence_transformers"), dict) else {}
    activation = (st or {}).get("activation_fn") or config.get("sbert_ce_default_activation_function")
    return {
        "architecture": (config.get("architectures") or [None])[0],
        "num_labels": info.num_labels,
        "positive_index": info.positive_index,
        "raw_score": "the logit" if info.num_labels == 1 else "logit(positive) - logit(negative)",
        "sentence_transformers_activation": activation,
        "scale": "raw logit (normalize='none'); normalize='sigmoid' gives the model's probability of relevance",
    }


def _calibration(variants: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if any(v.startswith("int8") for v in variants):
        out["onnx-int8"] = (
            "ONNX Runtime dynamic quantization: int8 MatMul weights per output channel (7-bit in int8-7bit), "
            "activations quantized per call, embeddings fp32; no calibration data"
        )
    if any(v.startswith("ov-int8") for v in variants):
        from crossrank.backends.ov_quantize import calibration_pairs

        pairs = calibration_pairs()
        digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
        out["openvino-int8"] = {
            "method": "NNCF post-training static quantization (model type transformer), attention matmuls left "
            "unquantized; 7-bit weights (NNCF overflow fix) in ov-int8-7bit",
            "data": "crossrank's bundled demo questions and passages (crossrank.demo_data), at the model's max length",
            "pairs": len(pairs),
            "pairs_sha256": digest,
        }
    return out


def _graph_inputs(folder: Path, variants: Sequence[str]) -> list[str] | None:
    """The exported graph's input names, read back from the first ONNX graph with ONNX Runtime."""
    onnx = next((v for v in variants if not v.startswith("ov-")), None)
    if onnx is None:
        return None
    try:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.log_severity_level = 3
        graph = str(folder / VARIANT_FILES[onnx])
        session = onnxruntime.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        return [i.name for i in session.get_inputs()]
    except Exception:  # the manifest is still complete without it
        return None


def export_model(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
    revision: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> ExportReport:
    """Write a portable model folder for ``model`` (a cross-encoder's Hub id or folder) at ``out``.

    ``variants``: file variants to include (default :data:`DEFAULT_VARIANTS`; see
    :data:`crossrank.exported.VARIANT_FILES`). Each is built as the full install builds it for its
    cache (and taken from that cache when already built there), then copied with the tokenizer,
    the config and a manifest. The folder appears at ``out`` only when complete (built beside it,
    then renamed); ``overwrite`` replaces an earlier export there. Needs the export toolchain
    (``pip install 'crossrank[torch]'``; the OpenVINO variants also ``crossrank[openvino]``).

    Raises:
        UnsupportedModelError: a causal-LM reranker (not exportable) or not a reranker at all.
        InvalidArgumentError: unknown variants, or ``out`` is not a new (or replaceable) folder.
        BackendUnavailableError: a toolchain package is missing (an ``ImportError`` naming the extra).
        ExportError: the model would not export.
    """
    from tqdm.auto import tqdm

    from crossrank import __version__
    from crossrank.backends.model_inputs import read_config
    from crossrank.scoring.pairs import load_tokenizer

    chosen = parse_variants(variants)
    _require_toolchain(chosen)
    name = os.fspath(model)
    path = resolve_model_dir(model, revision=revision, local_files_only=local_files_only)
    info = inspect_model(path, name=name)
    if info.exported is not None:
        raise InvalidArgumentError(f"{name} is already an exported folder; export its source model instead")
    if info.kind != "cross-encoder":
        raise UnsupportedModelError(
            f"{name} is a causal-LM reranker ({info.template}): causal-LM rerankers are not exportable. Their "
            "score is one vocabulary column of a generative LM, which the ONNX Runtime / OpenVINO paths do not "
            "run; use the source model with the torch backend (pip install 'crossrank[torch]')"
        )
    dest = Path(out).expanduser()
    _check_out(dest, path, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    show = sys.stderr.isatty() if progress is None else progress
    report = ExportReport(out=dest, source=name)
    try:
        steps = [*chosen, "tokenizer"]
        with tqdm(total=len(steps), desc=f"exporting {info.name}", unit="step", disable=not show) as bar:
            for variant in chosen:
                bar.set_postfix_str(variant)
                t0 = time.perf_counter()
                main = ensure_model_file(info, variant, trust_remote_code=trust_remote_code)
                target = tmp / Path(VARIANT_FILES[variant]).parent
                target.mkdir(parents=True)
                files: dict[str, dict[str, Any]] = {}
                for f in sorted(main.parent.iterdir()):
                    if f.is_file() and f.name != "manifest.json":
                        shutil.copyfile(f, target / f.name)
                        rel = f"{target.name}/{f.name}"
                        files[rel] = {"size": f.stat().st_size, "sha256": file_sha256(target / f.name)}
                report.variants[variant] = {
                    "file": VARIANT_FILES[variant],
                    "runs": list(VARIANT_PATHS[variant]),
                    "files": files,
                    "bytes": sum(int(m["size"]) for m in files.values()),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
                bar.update(1)
            bar.set_postfix_str("tokenizer and config")
            for f in sorted(path.iterdir()):
                if f.is_file() and f.suffix in _COPY_SUFFIXES and f.name not in _SKIP_NAMES:
                    shutil.copyfile(f, tmp / f.name)
            if not (tmp / "tokenizer.json").is_file():  # a slow tokenizer: the light install reads tokenizer.json only
                load_tokenizer(path).save(str(tmp / "tokenizer.json"))
            bar.update(1)
        config = read_config(path)
        manifest: dict[str, Any] = {
            "format": FOLDER_FORMAT,
            "family": info.kind,
            "crossrank_version": __version__,
            "source": {
                "model": name,
                "fingerprint": info.fingerprint,
                "files_sha256": _source_files(path),
            },
            "model_type": info.model_type,
            "head": _head(info, config),
            "max_length": info.default_max_length,
            "declared_max_length": info.declared_max_length,
            "position_limit": info.position_limit,
            "inputs": _graph_inputs(tmp, chosen),
            "calibration": _calibration(chosen),
            "export_recipe": EXPORT_FORMAT,
            "built_with": {
                d: _version(d)
                for d in ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "openvino", "nncf")
            },
            "variants": {v: {k: m[k] for k in ("file", "runs", "files", "bytes")} for v, m in report.variants.items()},
        }
        src = manifest["source"]
        src["content_sha256"] = hashlib.sha256(json.dumps(src["files_sha256"], sort_keys=True).encode()).hexdigest()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)  # mkdtemp made it private; the folder is meant to be copied and served
        try:
            tmp.rename(dest)
        except OSError as exc:  # another export wrote --out meanwhile
            raise InvalidArgumentError(f"--out {dest} appeared while exporting ({exc}); export again") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report.manifest = manifest
    report.seconds = time.perf_counter() - t_start
    return report
