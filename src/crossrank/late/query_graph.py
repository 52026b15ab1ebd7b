"""The query side of a multi-vector model on ONNX Runtime: the same vectors, without torch's per-op overhead.

A late-interaction query is one short sequence (32 tokens for a ColBERT-style model); torch's eager
dispatch spends more time launching a 6-layer encoder's ~100 small ops than computing them, and the
query encoder is most of a late-interaction stage's cost per query. This module exports the
model's transformer backbone once (fp32, eager attention, dynamic batch and length) into the
crossrank cache, keyed by the folder's content fingerprint, and runs it with ONNX Runtime.

Only the backbone moves: the query is prepared by sentence-transformers itself (its prompt or
marker, ``[MASK]`` expansion and attention mask, exactly as ``MultiVectorEncoder.encode_query``
prepares it), and the modules after the backbone (the token projection, the query mask, the
normalisation) run as sentence-transformers' own modules on the backbone's output. So the vectors
equal torch's to float32 rounding (the tests hold them within 1e-5), and any model whose backbone
does not export falls back to torch with a warning.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("crossrank")

#: Bump when the export recipe changes, so old cache entries are not used.
GRAPH_FORMAT = 1
GRAPH = "query-backbone.onnx"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def graph_dir(fingerprint: str) -> Path:
    """Where a model's query graph is cached: ``<crossrank cache>/late/<fingerprint>-q<format>/``."""
    from crossrank.backends.export import cache_root

    return cache_root() / "late" / f"{fingerprint}-q{GRAPH_FORMAT}"


class QueryGraph:
    """A multi-vector model's query encoder with the backbone on ONNX Runtime (see the module docs).

    Built by :meth:`build`, which returns None where the model cannot take this path: not on the
    CPU, no ONNX Runtime, a Hub id (no content fingerprint to key the cached graph by), or a
    backbone that does not export (logged).
    """

    def __init__(self, encoder: Any, session: Any, inputs: list[str]) -> None:
        self.encoder = encoder
        self.session = session
        self.inputs = inputs
        self._lock = threading.Lock()

    @classmethod
    def build(cls, encoder: Any, fingerprint: str) -> QueryGraph | None:
        """The query graph for ``encoder`` (exported on first use, then read from the cache), or None."""
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        from sentence_transformers.base.modules import Transformer

        backbone = encoder[0]
        if not isinstance(backbone, Transformer):
            return None
        hf = getattr(backbone, "auto_model", None) or getattr(backbone, "model", None)
        if hf is None or str(getattr(encoder, "device", "cpu")) != "cpu" or fingerprint.startswith("hub:"):
            return None
        params = inspect.signature(hf.forward).parameters
        names = [n for n in _INPUTS if n in params]
        if "input_ids" not in names or "attention_mask" not in names:
            return None
        where = graph_dir(fingerprint)
        graph = where / GRAPH
        try:
            if not graph.is_file():
                _export(hf, backbone.tokenizer, names, where)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            # No spin-waiting after a run: the torch modules and MaxSim that follow need these cores.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # any exporter or runtime failure: torch still encodes queries correctly
            log.warning(
                "late interaction: the query encoder of %s stays on torch (ONNX export failed: %s: %s)",
                fingerprint,
                type(exc).__name__,
                exc,
            )
            return None
        taken = [i.name for i in session.get_inputs()]
        return cls(encoder, session, taken)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """One ``(tokens, dim)`` float32 matrix per query, as ``MultiVectorEncoder.encode_query`` gives."""
        import torch

        enc = self.encoder
        # encode_query's own steps: the "query" prompt when the model has one, then preprocess(task="query").
        prompt = enc._resolve_prompt(None, "query" if "query" in enc.prompts else None)
        features = enc.preprocess(texts, prompt=prompt, task="query")
        feed = {}
        for name in self.inputs:
            value = features.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(features["input_ids"])
            feed[name] = value.numpy().astype(np.int64, copy=False)
        with self._lock:
            hidden = self.session.run(["last_hidden_state"], feed)[0]
        features["token_embeddings"] = torch.from_numpy(hidden)
        with torch.inference_mode():
            # The rest of the pipeline as sentence-transformers' forward runs it (its kwargs routing included).
            from sentence_transformers.base.modules import Router

            for i, (module_name, module) in enumerate(enc.named_children()):
                if i == 0:
                    continue
                if isinstance(module, Router):
                    kwargs: dict[str, Any] = {"task": "query"}
                else:
                    keys = (enc.module_kwargs or {}).get(module_name, [])
                    kwargs = {
                        k: v
                        for k, v in {"task": "query"}.items()
                        if k in keys or k in (getattr(module, "forward_kwargs", None) or ())
                    }
                features = module(features, **kwargs)
            tokens = features["token_embeddings"]
            masks = features["attention_mask"].bool()
            return [np.ascontiguousarray(t[m].float().numpy()) for t, m in zip(tokens, masks)]


def _export(hf: Any, tokenizer: Any, names: list[str], where: Path) -> None:
    """Export ``hf``'s last hidden state to ``where/GRAPH`` (atomically: a new folder renamed into place)."""
    import torch

    from crossrank.backends.export import export_hidden_state

    model = copy.deepcopy(hf).eval().float()
    with contextlib.suppress(Exception):  # eager attention exports as plain MatMul/Softmax
        model.set_attn_implementation("eager")
    enc = tokenizer(["a query", "a somewhat longer query with padding after it"], padding=True, return_tensors="pt")
    dummy = {n: enc[n] for n in names if n in enc}
    if "token_type_ids" in names and "token_type_ids" not in dummy:
        dummy["token_type_ids"] = torch.zeros_like(enc["input_ids"])
    dummy["attention_mask"][0, -1] = 0  # a masked position, as [MASK] expansion without attention makes

    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{where.name}.", dir=where.parent))
    try:
        export_hidden_state(model, dummy, tmp / GRAPH)
        tmp.chmod(0o755)
        try:
            os.replace(tmp, where)
        except OSError:  # another process exported it first: theirs is as good
            if not (where / GRAPH).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
