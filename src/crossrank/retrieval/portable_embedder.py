"""A torch-free bi-encoder: an exported embedder folder run with tokenizers, ONNX Runtime and numpy.

``crossrank export`` of a sentence-transformers bi-encoder (see
:mod:`crossrank.retrieval.embedder_export`) writes a folder with the transformer as an ONNX fp32
graph, the tokenizer, and a manifest (:data:`MANIFEST`) holding what sentence-transformers does
around the transformer: the pooling (mean or CLS), normalisation and the max sequence length. This
module runs that folder, so the light install (``pip install crossrank``, no torch) can embed a
query and search a Chroma collection that the full install indexed. Its vectors equal
sentence-transformers' within float32 rounding.

The manifest also names the source model exactly as a collection's embedder record names it (the
resolved spec and its content fingerprint, :mod:`crossrank.retrieval.embedder_record`), so an
exported folder counts as the same embedder as its source and the record check passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.errors import ModelLoadError
from crossrank.exported import file_sha256

MANIFEST = "crossrank-embedder.json"
"""The manifest of an exported embedder folder (distinct from a cross-encoder export's)."""
FOLDER_FORMAT = 1
"""The embedder-folder format this crossrank writes and reads."""
GRAPH = "model.onnx"
"""The transformer's ONNX fp32 graph (output: ``last_hidden_state``)."""
POOLING_MODES = ("mean", "cls", "max")


def is_exported_embedder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``crossrank export`` of a bi-encoder."""
    return (Path(path).expanduser() / MANIFEST).is_file()


def read_embedder_manifest(path: str | Path) -> dict[str, Any]:
    """The folder's manifest, checked for what :class:`PortableEmbedder` needs.

    Raises:
        ModelLoadError: no manifest, an unreadable one, another format or missing fields.
    """
    f = Path(path).expanduser() / MANIFEST
    hint = "export the bi-encoder again with `crossrank export MODEL --out DIR`"
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{f} is missing or unreadable ({exc}); {hint}") from exc
    if not isinstance(data, dict) or data.get("format") != FOLDER_FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise ModelLoadError(f"{f} is embedder-folder format {got!r}; this crossrank reads {FOLDER_FORMAT}: {hint}")
    missing = [k for k in ("source", "pooling", "normalize", "max_length", "inputs", "graph") if k not in data]
    if missing or data["pooling"] not in POOLING_MODES:
        raise ModelLoadError(f"{f} lacks {missing or ['a known pooling mode']}: {hint}")
    return data


class PortableEmbedder:
    """Embeds texts as sentence-transformers would with the source model, from an exported folder.

    Callable as a Chroma embedding function (``ef(texts) -> list of vectors``); :meth:`embed` returns
    one ``(n, dim)`` float32 array. Thread-safe: the tokenizer is configured once and an ONNX Runtime
    session may be run from many threads.
    """

    def __init__(self, folder: str | Path, *, batch_size: int = 32) -> None:
        import numpy as np
        import onnxruntime
        from tokenizers import Tokenizer

        self.folder = Path(folder).expanduser()
        self.manifest = read_embedder_manifest(self.folder)
        graph = self.folder / GRAPH
        want = self.manifest["graph"]
        if not graph.is_file() or graph.stat().st_size != want.get("size") or file_sha256(graph) != want.get("sha256"):
            raise ModelLoadError(
                f"{graph} is missing or damaged (it fails the size / SHA-256 in {MANIFEST}); copy the folder again "
                "or export the bi-encoder again with `crossrank export`"
            )
        self.pooling: str = self.manifest["pooling"]
        self.normalize: bool = bool(self.manifest["normalize"])
        self.max_length = int(self.manifest["max_length"])
        self.inputs: list[str] = list(self.manifest["inputs"])
        self.batch_size = batch_size
        try:
            tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as exc:
            raise ModelLoadError(f"{self.folder}/tokenizer.json could not be read ({exc})") from exc
        # tokenizer.json may carry its own truncation / fixed padding; sentence-transformers truncates at
        # max_seq_length and pads each batch to its longest text.
        pad = self.manifest.get("pad") or {}
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        tok.enable_padding(pad_id=int(pad.get("id", 0)), pad_token=str(pad.get("token", "[PAD]")))
        self._tok = tok
        opts = onnxruntime.SessionOptions()
        opts.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime could not load {graph} ({exc})") from exc
        self._np = np

    @property
    def source(self) -> str:
        """The source model as a collection's embedder record names it."""
        return str(self.manifest["source"]["model"])

    def embed(self, texts: Sequence[str]) -> Any:
        """``(len(texts), dim)`` float32 embeddings, pooled and (if the source normalises) unit length."""
        np = self._np
        # Longest first, as sentence-transformers batches (by characters): little padding per batch.
        order = sorted(range(len(texts)), key=lambda i: -len(str(texts[i])))
        ordered = [str(texts[i]) for i in order]
        out = []
        for s in range(0, len(ordered), self.batch_size):
            enc = self._tok.encode_batch(ordered[s : s + self.batch_size])
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            values = {
                "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                "attention_mask": mask,
                "token_type_ids": np.asarray([e.type_ids for e in enc], dtype=np.int64),
            }
            hidden = self._session.run(None, {n: values[n] for n in self.inputs})[0].astype(np.float32)
            out.append(self._pool(hidden, mask))
        if not out:
            return np.zeros((0, int(self.manifest.get("dimension") or 0)), dtype=np.float32)
        pooled = np.concatenate(out)
        vecs = np.empty_like(pooled)
        vecs[order] = pooled  # back to the callers' order
        if self.normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs.astype(np.float32)

    def _pool(self, hidden: Any, mask: Any) -> Any:
        """sentence-transformers' Pooling: mean over real tokens, the CLS token, or max over real tokens."""
        np = self._np
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask[:, :, None].astype(np.float32)
        if self.pooling == "max":
            return np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def __call__(self, input: Sequence[str]) -> list[Any]:
        """Chroma's embedding-function call: one vector per text."""
        return list(self.embed(list(input)))
