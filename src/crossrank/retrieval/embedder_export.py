"""``crossrank export`` of a sentence-transformers bi-encoder: a folder the light install embeds with.

The folder (read by :class:`~crossrank.retrieval.portable_embedder.PortableEmbedder`) holds the
transformer as an ONNX fp32 graph (``last_hidden_state``), ``tokenizer.json``, the config and a
manifest with the pooling, normalisation and max length read from the sentence-transformers model,
and the source named as a collection's embedder record names it, so a collection indexed with the
source is queried with the folder without an embedder mismatch. Only Transformer -> Pooling
(mean / CLS / max) -> optional Normalize pipelines are exportable; anything else (a Dense layer,
prompts' own modules) is refused with :class:`~crossrank.errors.UnsupportedModelError`.
Needs ``pip install 'crossrank[torch]'``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from crossrank.errors import ExportError, InvalidArgumentError, UnsupportedModelError, missing_extra
from crossrank.exported import file_sha256
from crossrank.retrieval.portable_embedder import FOLDER_FORMAT, GRAPH, MANIFEST

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_COPY = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md")


def _modules(path: Path) -> list[dict[str, Any]] | None:
    f = path / "modules.json"
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, list) else None


def _type(module: dict[str, Any]) -> str:
    """Module type, with sentence-transformers 5+'s subpackage paths folded onto the classic names."""
    t = str(module.get("type", ""))
    return "sentence_transformers.models." + t.rsplit(".", 1)[-1] if t.startswith("sentence_transformers.") else t


def is_bi_encoder(path: str | Path) -> bool:
    """Whether ``path`` is a sentence-transformers bi-encoder folder (its modules.json has a Pooling module)."""
    mods = _modules(Path(path))
    return bool(mods) and any(_type(m) == _POOLING for m in mods or [])


def _pooling(path: Path, mods: list[dict[str, Any]], name: str) -> tuple[str, bool]:
    """(pooling mode, normalize) from the modules, refusing what the portable embedder does not run."""
    kinds = [_type(m) for m in mods]
    if kinds[:2] != [_TRANSFORMER, _POOLING] or any(k != _NORMALIZE for k in kinds[2:]):
        raise UnsupportedModelError(
            f"{name} is a bi-encoder with modules {kinds}: only Transformer -> Pooling -> (Normalize) "
            "models are exportable; query with the source model in the full install (pip install 'crossrank[torch]')"
        )
    cfg_file = path / str(mods[1].get("path") or "") / "config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    if "pooling_mode" in cfg:  # sentence-transformers 6 saves one key: a mode name, or a list of them
        named = cfg["pooling_mode"]
        chosen = [str(m) for m in (named if isinstance(named, list) else [named])]
        modes = [m for m in chosen if m in ("mean", "cls", "max")]
        others = [m for m in chosen if m not in modes]
    else:  # earlier versions: one boolean per mode
        modes = [
            m
            for m, key in (("mean", "mean_tokens"), ("cls", "cls_token"), ("max", "max_tokens"))
            if cfg.get(f"pooling_mode_{key}")
        ]
        others = [
            k
            for k, v in cfg.items()
            if k.startswith("pooling_mode_") and v and not k.endswith(("mean_tokens", "cls_token", "max_tokens"))
        ]
    if len(modes) != 1 or others:
        raise UnsupportedModelError(
            f"{name} pools with {modes + others or 'nothing'}: the portable embedder runs exactly one of mean, cls, max"
        )
    return modes[0], _NORMALIZE in kinds


def export_embedder(
    model: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Any]:
    """Export the sentence-transformers bi-encoder ``model`` (a folder, or the default embedder's id) to ``out``.

    Returns the manifest written. Raises :class:`UnsupportedModelError` for pipelines the portable
    embedder cannot run, :class:`InvalidArgumentError` when ``out`` is not new (``overwrite``
    replaces an earlier embedder export), and an ``ImportError`` naming ``crossrank[torch]`` without
    the export toolchain.
    """
    import importlib.util

    for module in ("torch", "sentence_transformers", "onnx"):
        if importlib.util.find_spec(module) is None:
            raise missing_extra(f"{module} (needed by crossrank export)", "torch")
    import torch
    from sentence_transformers import SentenceTransformer

    from crossrank import __version__
    from crossrank.backends.export import export_hidden_state
    from crossrank.retrieval.embedder_record import embedder_fingerprint
    from crossrank.retrieval.embeddings import resolve_embedder

    spec = resolve_embedder(model)  # exactly what a collection indexed with ``model`` records
    path = Path(spec)
    mods = _modules(path) if path.is_dir() else None
    if mods is None or not is_bi_encoder(path):
        raise UnsupportedModelError(
            f"{spec} is not a local sentence-transformers bi-encoder folder (no Pooling module)"
        )
    pooling, normalize = _pooling(path, mods, spec)
    dest = Path(out).expanduser()
    replaceable = overwrite and (dest / MANIFEST).is_file()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not replaceable:
        raise InvalidArgumentError(f"--out {dest} exists and is not empty: name a new folder (--force replaces one)")
    # Eager attention exports as plain MatMul/Softmax (as the cross-encoder export does), without SDPA's guards.
    st: Any = SentenceTransformer(str(path), device="cpu", model_kwargs={"attn_implementation": "eager"})
    transformer: Any = st[0]
    hf: Any = transformer.auto_model.eval()
    names = [
        n for n in ("input_ids", "attention_mask", "token_type_ids") if n in inspect.signature(hf.forward).parameters
    ]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        enc = transformer.tokenizer(
            ["a short text", "a somewhat longer text with padding after it"], padding=True, return_tensors="pt"
        )
        dummy = {n: enc[n] for n in names if n in enc}
        if "token_type_ids" in names and "token_type_ids" not in dummy:
            dummy["token_type_ids"] = torch.zeros_like(enc["input_ids"])

        try:
            export_hidden_state(hf, dummy, tmp / GRAPH)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for the bi-encoder {spec}: {exc}") from exc
        for name in _COPY:
            if (path / name).is_file():
                shutil.copyfile(path / name, tmp / name)
        if not (tmp / "tokenizer.json").is_file():
            transformer.tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        tok = transformer.tokenizer
        manifest: dict[str, Any] = {
            "format": FOLDER_FORMAT,
            "family": "bi-encoder",
            "crossrank_version": __version__,
            "source": {"model": spec, "fingerprint": embedder_fingerprint(spec)},
            "pooling": pooling,
            "normalize": normalize,
            "max_length": int(st.max_seq_length),
            "dimension": int(hf.config.hidden_size),
            "inputs": list(dummy),
            "pad": {"id": int(tok.pad_token_id or 0), "token": str(tok.pad_token or "[PAD]")},
            "graph": {"file": GRAPH, "size": (tmp / GRAPH).stat().st_size, "sha256": file_sha256(tmp / GRAPH)},
            "built_with": {d: _version(d) for d in ("torch", "transformers", "sentence-transformers", "onnx")},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
