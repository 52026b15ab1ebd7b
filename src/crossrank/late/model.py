"""Loading a multi-vector (late-interaction, ColBERT-style) model, shared process-wide.

:func:`load_multi_vector_model` reads a folder in any of the three formats users have:

* sentence-transformers ``MultiVectorEncoder`` saves (``modules.json`` with a token-level
  ``Dense``, a ``MultiVectorMask`` and a token ``Normalize``);
* PyLate saves (an ST-style folder whose ``config_sentence_transformers.json`` says
  ``model_type: ColBERT``, with ``query_prefix`` / ``document_prefix`` markers such as ``[Q] `` or
  ``[unused0]``, ``query_length`` / ``document_length`` and a ``pylate.models.Dense.Dense``
  projection);
* Stanford ColBERT checkpoints (``config.json`` with ``architectures: ["HF_ColBERT"]``, the
  projection as ``linear.weight`` inside the Hugging Face weights, settings in ``artifact.metadata``).

sentence-transformers 6.2's ``MultiVectorEncoder`` loads all three natively (it rewrites PyLate's
class references, registers the markers as special tokens, turns PyLate / Stanford query-length
fields into its ``query_expansion`` config and builds the Stanford projection from
``linear.weight``), so this module wraps it instead of re-implementing any format: what it adds is
the identity crossrank needs (a content fingerprint of the folder, the token-vector size and
document length, for cache keys and for the vector store's model record), numpy output in float32,
a lock around encoding (fast tokenizers are not re-entrant) and one loaded copy per process.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import InvalidArgumentError, ModelLoadError, ModelNotFoundError, missing_extra

#: Files whose bytes define a multi-vector model's behaviour (configs, tokenizer, Stanford metadata).
_CONFIG_SUFFIXES = (".json", ".txt", ".metadata", ".model", ".py")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_HEAD_BYTES = 1 << 20
#: How queries are encoded: ``auto`` (ONNX Runtime where it works, else torch), ``onnx`` or ``torch``.
QUERY_BACKENDS: tuple[str, ...] = ("auto", "onnx", "torch")


def folder_fingerprint(path: str | os.PathLike[str]) -> str:
    """A content hash of a model folder and its module subfolders (``1_Dense/`` ...), 16 hex digits.

    Config, tokenizer and metadata files are hashed whole; weight files by size plus their first and
    last MiB (enough to tell trained weights apart, and cheap for large checkpoints). README files
    and training logs are ignored, so rewriting a model card does not invalidate stored vectors.
    """
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") or part in ("checkpoints", "runs") for part in f.relative_to(root).parts):
            continue
        name = f.name.lower()
        if name.endswith(_WEIGHT_SUFFIXES) and not name.startswith(("optimizer", "scheduler", "training_args")):
            size = f.stat().st_size
            h.update(f"{rel}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(_HEAD_BYTES))
                if size > 2 * _HEAD_BYTES:
                    fh.seek(-_HEAD_BYTES, os.SEEK_END)
                    h.update(fh.read(_HEAD_BYTES))
        elif name.endswith(_CONFIG_SUFFIXES) and name not in ("trainer_state.json", "readme.md"):
            h.update(rel.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _multi_vector_encoder() -> Any:
    try:
        from sentence_transformers import MultiVectorEncoder
    except ImportError as exc:  # sentence-transformers < 6 has no multi-vector models
        raise missing_extra("sentence-transformers>=6", "late") from exc
    return MultiVectorEncoder


@dataclass(frozen=True)
class ModelRecord:
    """What identifies a multi-vector model for stored vectors: if any of it differs, vectors do not mix."""

    name: str
    fingerprint: str
    dim: int
    document_length: int | None
    query_length: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MultiVectorModel:
    """A loaded multi-vector model: ``encode_queries`` / ``encode_documents`` give float32 token matrices.

    Made by :func:`load_multi_vector_model` (one per folder, device and options per process). Every
    method is thread-safe. ``similarity`` is the model's own scoring: ``maxsim`` (the ColBERT sum of
    per-query-token maxima) or ``meanmaxsim`` (the same divided by the query's token count).
    """

    def __init__(self, encoder: Any, *, name: str, fingerprint: str, query_backend: str = "auto") -> None:
        if query_backend not in QUERY_BACKENDS:
            raise InvalidArgumentError(
                f"query_backend must be one of {', '.join(QUERY_BACKENDS)}, got {query_backend!r}"
            )
        self.encoder = encoder
        self.name = name
        self.fingerprint = fingerprint
        self._lock = threading.RLock()
        self._query_backend = query_backend
        self._graph: Any = None
        self._graph_tried = query_backend == "torch"
        dim = encoder.get_embedding_dimension()
        if not isinstance(dim, int) or dim < 1:
            raise ModelLoadError(f"{name}: cannot tell the size of its token vectors (no projection module?)")
        self.dim: int = dim
        backbone = encoder[0]
        self.document_length: int | None = getattr(backbone, "document_length", None) or self._tokenizer_max()
        expansion = getattr(backbone, "query_expansion", None) or {}
        self.query_length: int | None = expansion.get("length") or getattr(backbone, "query_length", None)
        self.similarity: str = str(encoder.similarity_fn_name)

    def _tokenizer_max(self) -> int | None:
        n = getattr(self.encoder, "max_seq_length", None)
        return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else None

    @property
    def record(self) -> ModelRecord:
        """The model's identity for a vector store (see :class:`ModelRecord`)."""
        return ModelRecord(self.name, self.fingerprint, self.dim, self.document_length, self.query_length)

    def __repr__(self) -> str:
        return (
            f"MultiVectorModel({self.name!r}, dim={self.dim}, query_length={self.query_length}, "
            f"document_length={self.document_length}, similarity={self.similarity!r})"
        )

    @property
    def query_backend(self) -> str:
        """What encodes queries: ``onnx`` (the backbone on ONNX Runtime, :mod:`crossrank.late.query_graph`)
        or ``torch``; with ``auto`` (the default) ONNX Runtime on the CPU when the backbone exports."""
        with self._lock:
            self._resolve_graph()
        return "onnx" if self._graph is not None else "torch"

    def _resolve_graph(self) -> None:
        """Build the ONNX query graph on first use (under the lock), where the backend allows it."""
        if self._graph_tried:
            return
        self._graph_tried = True
        from crossrank.late.query_graph import QueryGraph

        self._graph = QueryGraph.build(self.encoder, self.fingerprint)
        if self._graph is None and self._query_backend == "onnx":
            from crossrank.errors import BackendUnavailableError

            raise BackendUnavailableError(
                f"{self.name}: query_backend='onnx' needs the model on the CPU, onnxruntime and a backbone "
                "that exports to ONNX (see the log); use query_backend='auto' or 'torch'"
            )

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 32) -> list[np.ndarray]:
        """One ``(query tokens, dim)`` float32 matrix per query, as the model encodes queries
        (its query marker, length and ``[MASK]`` expansion)."""
        if not texts:
            return []
        with self._lock:
            self._resolve_graph()
            if self._graph is not None:
                out = []
                for start in range(0, len(texts), batch_size):
                    out += self._graph.encode(list(texts[start : start + batch_size]))
                return out
            out = self.encoder.encode_query(
                list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        return [np.ascontiguousarray(v, dtype=np.float32) for v in out]

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        pool_factor: int | None = None,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """One ``(document tokens, dim)`` float32 matrix per text (marker, length cap, skiplist as the
        model defines them); ``pool_factor`` > 1 merges tokens by hierarchical clustering (ST's
        ``HierarchicalTokenPooling``, the first token kept) to store about 1/factor of them."""
        if not texts:
            return []
        pooling = None
        if pool_factor is not None and pool_factor > 1:
            from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

            pooling = HierarchicalTokenPooling(pool_factor=float(pool_factor))
        with self._lock:
            out = self.encoder.encode_document(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                show_progress_bar=progress,
                token_pooling=pooling,
            )
        return [np.ascontiguousarray(v, dtype=np.float32) for v in out]

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Whether each document is longer than the model's document length (so its tail is not scored)."""
        if self.document_length is None or not texts:
            return [False] * len(texts)
        tok = self.encoder.tokenizer
        prefix = self.encoder.prompts.get("document") or ""
        with self._lock:
            ids = tok([prefix + t for t in texts], add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) > self.document_length for x in ids]


_MODELS: dict[tuple[str, str, str | None, bool, str], MultiVectorModel] = {}
_MODELS_LOCK = threading.Lock()


def load_multi_vector_model(
    model: str | os.PathLike[str],
    *,
    device: str | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    query_backend: str = "auto",
) -> MultiVectorModel:
    """Load a multi-vector model folder (ST ``MultiVectorEncoder``, PyLate or Stanford ColBERT) or Hub id.

    ``query_backend``: ``auto`` (default) encodes queries with the backbone on ONNX Runtime when the
    model is on the CPU and its backbone exports (the same vectors to float32 rounding, a fraction of
    torch's per-query overhead; exported once into the crossrank cache), else with torch; ``onnx``
    insists (raising where it cannot), ``torch`` never exports. Documents are always encoded by torch.

    One copy per (folder content, device, options) per process: scorers, the store's indexer and the
    server share it. ``device`` defaults to CUDA when torch sees one, else the CPU.

    Raises:
        ModelNotFoundError: a local path that does not exist.
        ModelLoadError: the folder is not a multi-vector model ST can load.
        BackendUnavailableError: sentence-transformers >= 6 is missing.
    """
    name = os.fspath(model)
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(f"model must be a multi-vector model folder or Hub id, got {model!r}")
    path = Path(name).expanduser()
    local = path.is_dir()
    if not local and (name.startswith((".", "/", "~")) or (os.sep in name and path.parent.is_dir())):
        raise ModelNotFoundError(
            f"multi-vector model folder {name!r} does not exist: pass the folder that holds modules.json or "
            "config.json (e.g. the --out of `crossrank distill --late-interaction`)"
        )
    fingerprint = folder_fingerprint(path) if local else f"hub:{name}@{revision or 'main'}"
    if query_backend not in QUERY_BACKENDS:
        raise InvalidArgumentError(f"query_backend must be one of {', '.join(QUERY_BACKENDS)}, got {query_backend!r}")
    key = (str(path.resolve()) if local else name, fingerprint, device, trust_remote_code, query_backend)
    with _MODELS_LOCK:
        hit = _MODELS.get(key)
        if hit is not None:
            return hit
        cls = _multi_vector_encoder()
        try:
            encoder = cls(
                str(path) if local else name,
                device=device,
                local_files_only=local_files_only,
                trust_remote_code=trust_remote_code,
                revision=revision,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"{name} could not be loaded as a multi-vector model ({type(exc).__name__}: {exc}); expected a "
                "sentence-transformers MultiVectorEncoder, PyLate or Stanford ColBERT folder"
            ) from exc
        loaded = MultiVectorModel(encoder, name=name, fingerprint=fingerprint, query_backend=query_backend)
        _MODELS[key] = loaded
        return loaded


def is_multi_vector_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a multi-vector model folder (used by ``crossrank serve`` to detect one).

    True for ST ``MultiVectorEncoder`` and PyLate saves (``config_sentence_transformers.json`` with
    ``model_type`` ``MultiVectorEncoder`` or ``ColBERT``, or ``similarity_fn_name`` ``MaxSim``, or a
    ``pylate.`` module in ``modules.json``) and Stanford ColBERT (``HF_ColBERT``).
    """
    import json

    p = Path(path).expanduser()
    try:
        st = json.loads((p / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        # model_type since PyLate 1.x / ST 6; older PyLate saves only asked for MaxSim scoring
        if st.get("model_type") in ("MultiVectorEncoder", "ColBERT") or st.get("similarity_fn_name") == "MaxSim":
            return True
    except (OSError, ValueError, AttributeError):
        pass
    try:  # older still: only the PyLate projection module names it
        if "pylate." in (p / "modules.json").read_text(encoding="utf-8"):
            return True
    except OSError:
        pass
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        return "HF_ColBERT" in (cfg.get("architectures") or [])
    except (OSError, ValueError):
        return False
