"""Which token inputs a model takes, read from the model itself — for export, feeds and calibration alike.

Families differ: BERT and ELECTRA take ``token_type_ids``; RoBERTa, XLM-RoBERTa (one token type),
DistilBERT, ModernBERT and DeBERTa-v3 do not, or ignore them. Nothing here assumes: the model's
forward signature, its tokenizer's ``model_input_names`` and its ``type_vocab_size`` decide, and
a compiled model is always fed exactly its own input names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import ModelLoadError, UnsupportedModelError

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def read_config(path: Path) -> dict[str, Any]:
    """The model's config.json as a dict; empty when missing or unreadable (callers then assume nothing)."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def type_vocab_size(path: Path) -> int | None:
    """``type_vocab_size`` from the model's config.json; None when the config does not say.

    XLM-RoBERTa / RoBERTa have 1 (only type id 0 is valid), DeBERTa-v3 has 0 (no type embeddings at all).
    """
    value = read_config(path).get("type_vocab_size")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def token_types_usable(path: Path) -> bool:
    """Whether the model has more than one token type, i.e. whether type ids carry information.

    When it has one or none, the only valid (or the ignored) id is 0: feeds hold zeros, so a
    template that marks the document with type 1 can never index past a one-row embedding.
    """
    size = type_vocab_size(path)
    return size is None or size >= 2


def tokenizer_input_names(path: Path, *, trust_remote_code: bool = False) -> tuple[str, ...] | None:
    """The ``model_input_names`` the model's tokenizer declares: what sentence-transformers feeds it.

    RoBERTa, XLM-RoBERTa, DistilBERT and ModernBERT tokenizers declare no ``token_type_ids``; BERT,
    ELECTRA and DeBERTa-v2 do. None when it cannot be told (then the model's signature decides).
    """
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
        names = getattr(tok, "model_input_names", None)
        if names:
            return tuple(str(n) for n in names)
    except Exception:  # no transformers, or a tokenizer only crossrank's own loader reads
        pass
    try:
        declared = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("model_input_names")
    except (OSError, ValueError, AttributeError):
        return None
    return tuple(str(n) for n in declared) if isinstance(declared, list) and declared else None


def select_inputs(forward: Callable[..., Any], declared: Collection[str] | None, types: int | None) -> list[str]:
    """The token inputs to give a model, in :data:`TOKEN_INPUTS` order.

    ``forward``: the model's forward (only parameters it names explicitly count: ``**kwargs`` does
    not mean it uses type ids); ``declared``: the tokenizer's ``model_input_names`` (None: unknown);
    ``types``: the config's ``type_vocab_size`` (None: unknown). ``attention_mask`` is kept whenever
    the model takes it, since crossrank pads batches; ``token_type_ids`` only when the model takes
    it, the tokenizer produces it and there is more than one type (else the model's default, zeros,
    is the same thing).
    """
    import inspect

    params = inspect.signature(forward).parameters
    names = [n for n in TOKEN_INPUTS if n in params and params[n].kind is not inspect.Parameter.VAR_KEYWORD]
    if not names and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names = [n for n in TOKEN_INPUTS if n in (declared or ("input_ids", "attention_mask"))]  # forward(**inputs)
    if "input_ids" not in names:
        raise UnsupportedModelError("the model's forward() takes no input_ids; crossrank feeds it token ids only")
    if "token_type_ids" in names and (
        (declared is not None and "token_type_ids" not in declared) or (types is not None and types < 2)
    ):
        names.remove("token_type_ids")
    return names


def check_input_names(names: Sequence[str], where: str) -> None:
    """Refuse, at load time, a model file that wants inputs crossrank does not produce."""
    unknown = [n for n in names if n not in TOKEN_INPUTS]
    if unknown or "input_ids" not in names:
        raise ModelLoadError(
            f"{where} takes inputs {list(names)}; crossrank feeds only {list(TOKEN_INPUTS)} (input_ids required). "
            "Delete it to let crossrank export the model itself"
        )


def model_feed(
    batch: Mapping[str, np.ndarray], names: Sequence[str], *, zero_token_types: bool
) -> dict[str, np.ndarray]:
    """Exactly the inputs ``names`` (a compiled model's own), taken from a padded batch.

    OpenVINO refuses a feed holding a name its model lacks, and ONNX Runtime one missing a name it
    has, so the feed is built from the model's names, never from the batch's. ``zero_token_types``
    (a model with at most one token type) feeds zeros, the only valid type id there.
    """
    feed: dict[str, np.ndarray] = {}
    for name in names:
        if name == "token_type_ids" and zero_token_types:
            feed[name] = np.zeros_like(batch["input_ids"])
        else:
            feed[name] = batch[name]
    return feed


def port_names(ports: Any) -> list[str]:
    """One name per model input: the token input it is (a port may carry several names), else any name."""
    names = []
    for port in ports:
        known = [n for n in TOKEN_INPUTS if n in port.get_names()]
        names.append(known[0] if known else port.get_any_name())
    return names
