"""What the server says about itself, in the shapes the APIs it speaks define.

``/info`` carries Hugging Face TEI's ``Info`` fields (``model_id``, ``model_type``,
``max_input_length``, ``max_client_batch_size``, ``auto_truncate``, ...: TEI's
``router/src/lib.rs``), which TEI clients read to configure themselves, beside crossrank's own
fields. ``/models`` is Infinity's model list (``OpenAIModelInfo`` of ``ModelInfo``, what
``infinity_client``'s ``models`` call parses) and ``/v1/models`` the OpenAI-style list vLLM serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossrank.scoring.local import LocalScorer

# TEI's dtype names for what a crossrank backend computes in.
_DTYPES = (("int8", "int8"), ("bf16", "bfloat16"), ("fp16", "float16"))


def tei_dtype(backend: str) -> str:
    """TEI's ``model_dtype`` for a crossrank backend name (``openvino-int8`` -> ``int8``; fp32 -> ``float32``)."""
    for tag, name in _DTYPES:
        if tag in backend:
            return name
    return "float32"


def reranker_labels(scorer: object) -> dict[str, Any]:
    """TEI's ``model_type`` for a reranker: ``{"reranker": {"id2label", "label2id"}}`` from the model's config.

    TEI reads both maps from ``config.json``; a model without them (or a scorer with no local
    folder: remote, late interaction, LLM) reports one label, as a one-logit reranker has.
    """
    id2label: dict[str, str] = {"0": "LABEL_0"}
    path = scorer.info.path if isinstance(scorer, LocalScorer) else None
    if path is not None:
        try:
            config = json.loads((Path(path) / "config.json").read_text())
            labels = config.get("id2label")
            if isinstance(labels, dict) and labels:
                id2label = {str(k): str(v) for k, v in labels.items()}
        except (OSError, ValueError):
            pass
    return {"reranker": {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items() if k.isdigit()}}}


def tei_info(
    *,
    model_id: str,
    scorer: object,
    backend: str,
    max_length: int | None,
    max_concurrent: int,
    max_documents: int,
    version: str,
) -> dict[str, Any]:
    """TEI's ``Info`` fields for this server.

    ``auto_truncate`` is true: a request that leaves TEI's ``truncate`` out is cut to fit (or scored
    in windows), as a TEI started with ``--auto-truncate``; ``truncate: false`` is refused with TEI's 413.
    """
    max_input = int(max_length or 512)
    pairs = scorer.max_batch_pairs if isinstance(scorer, LocalScorer) else 32
    return {
        "model_id": model_id,
        "model_sha": None,
        "model_dtype": tei_dtype(backend),
        "model_type": reranker_labels(scorer),
        "max_concurrent_requests": max_concurrent,
        "max_input_length": max_input,
        "max_batch_tokens": pairs * max_input,
        "max_batch_requests": None,
        "max_client_batch_size": max_documents,
        "auto_truncate": True,
        "tokenization_workers": 1,
        "version": version,
        "sha": None,
        "docker_label": None,
    }


def model_list(names: tuple[str, ...], *, backend: str, created: int, owned_by: str, stats: dict[str, Any]) -> Any:
    """The ``{"object": "list", "data": [...]}`` list of served names (the first is the one responses report)."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "owned_by": owned_by,
                "created": created,
                "backend": backend,
                "capabilities": ["rerank"],
                "stats": stats,
            }
            for name in names
        ],
    }
