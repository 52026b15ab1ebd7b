"""The layout of an exported model folder (``crossrank export``): its manifest and where each graph lives.

An exported folder holds the tokenizer, the config and ready-made graphs — no torch weights — so a
torch-free install can score with it and never builds anything. This module only reads the layout
(it imports nothing but the error types); writing a folder is :mod:`crossrank.backends.portable`,
and which CPU paths a folder serves on this machine is decided there too.

Layout (file variants as in :mod:`crossrank.backends.export`)::

    crossrank-export.json            the manifest (format, source and its content hash, variants ...)
    config.json, tokenizer.json ...  copied from the source model (tokenizer.json always present)
    fp32/model.onnx                  ONNX fp32: ONNX Runtime fp32, OpenVINO fp32 and bf16
    int8/model.onnx                  ONNX Runtime dynamic int8 (CPUs with VNNI / AMX)
    int8-7bit/model.onnx             the same with 7-bit weights (CPUs without int8 dot-product units)
    ov-int8/model.xml + model.bin    OpenVINO static int8 (CPUs with VNNI / AMX)
    ov-int8-7bit/model.xml + .bin    the same with 7-bit weights (CPUs without)

Each variant's folder is a copy of the full install's cache entry for it (minus its manifest), so
a graph with external data files keeps the names it refers to them by.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from crossrank.errors import ModelLoadError, NotExportedError

MANIFEST = "crossrank-export.json"
#: The folder format this crossrank writes and reads; bumped when the layout changes incompatibly.
FOLDER_FORMAT = 1

#: file variant -> its main file, relative to the folder.
VARIANT_FILES: dict[str, str] = {
    "fp32": "fp32/model.onnx",
    "int8": "int8/model.onnx",
    "int8-7bit": "int8-7bit/model.onnx",
    "ov-int8": "ov-int8/model.xml",
    "ov-int8-7bit": "ov-int8-7bit/model.xml",
}

#: What ``crossrank export`` writes by default: every graph ``auto`` can pick on an x86 CPU with or
#: without int8 dot-product units, for ONNX Runtime (the light install's runtime) and OpenVINO.
#: ``ov-int8-7bit`` is left out: where it is needed (no VNNI/AMX) OpenVINO's fp32 measured faster
#: faster (AVX2, emulated), so ``auto`` never picks it there; ``--variants all`` still writes it.
DEFAULT_VARIANTS: tuple[str, ...] = ("fp32", "int8", "int8-7bit", "ov-int8")

#: file variant -> the (backend-precision) paths it runs, for messages and the manifest.
VARIANT_PATHS: dict[str, tuple[str, ...]] = {
    "fp32": ("onnx-fp32", "openvino-fp32", "openvino-bf16"),
    "int8": ("onnx-int8 on CPUs with VNNI/AMX",),
    "int8-7bit": ("onnx-int8 on CPUs without VNNI/AMX",),
    "ov-int8": ("openvino-int8 on CPUs with VNNI/AMX",),
    "ov-int8-7bit": ("openvino-int8 on CPUs without VNNI/AMX",),
}


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when ``path`` is not an exported folder.

    Raises:
        ModelLoadError: a manifest that is unreadable, of another format or names no variants.
    """
    f = path / MANIFEST
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{f} is unreadable ({exc}); export the model again with `crossrank export`") from exc
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict) or not data["variants"]:
        raise ModelLoadError(f"{f} lists no exported variants; export the model again with `crossrank export`")
    if data.get("format") != FOLDER_FORMAT:
        raise ModelLoadError(
            f"{path} was exported in folder format {data.get('format')!r}; this crossrank reads format "
            f"{FOLDER_FORMAT}: export it again with this version's `crossrank export`"
        )
    unknown = [v for v in data["variants"] if v not in VARIANT_FILES]
    if unknown:
        raise ModelLoadError(f"{f} names variants this crossrank does not know: {unknown}; upgrade crossrank")
    return data


def held_variants(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The file variants a manifest lists, in :data:`VARIANT_FILES` order."""
    return tuple(v for v in VARIANT_FILES if v in manifest["variants"])


def describe_held(held: tuple[str, ...]) -> str:
    """What a folder holding ``held`` can run, for error messages."""
    return "; ".join(f"{v} ({', '.join(VARIANT_PATHS[v])})" for v in held)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 4 MiB blocks (manifests record it for every exported file)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def variant_file(folder: Path, held: tuple[str, ...], variant: str, *, name: str) -> Path:
    """The main file of ``variant`` in an exported folder, its files checked against the manifest.

    Raises:
        NotExportedError: the folder was exported without ``variant``; the message says what it holds.
        ModelLoadError: a file is missing or fails its size / SHA-256 check (a damaged copy).
    """
    if variant not in held:
        raise NotExportedError(
            f"{name} is an exported folder without the {variant} graph ({', '.join(VARIANT_PATHS[variant])}); "
            f"it holds: {describe_held(held)}. Use backend='auto' (it chooses among what the folder holds), "
            f"or export again with it: crossrank export SOURCE --out DIR --variants {','.join((*held, variant))}"
        )
    manifest = read_manifest(folder)
    assert manifest is not None  # held came from it
    files: dict[str, dict[str, Any]] = manifest["variants"][variant].get("files", {})
    for rel, want in files.items():
        f = folder / rel
        if not f.is_file() or f.stat().st_size != want.get("size") or file_sha256(f) != want.get("sha256"):
            raise ModelLoadError(
                f"{f} is missing or damaged (it fails the size / SHA-256 recorded in {MANIFEST}); "
                "copy the exported folder again, or export it again with `crossrank export`"
            )
    return folder / VARIANT_FILES[variant]
