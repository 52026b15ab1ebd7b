"""Find a cross-encoder on disk (or fetch it from the Hub) and read what scoring needs from it.

Everything is resolved to a local directory first, so the tokenizer, the torch model and the ONNX
export all read the same files, and the offline story is one code path: a local directory always
works; a Hub id works from the local cache with ``local_files_only=True`` / ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import InvalidArgumentError, ModelLoadError, ModelNotFoundError, UnsupportedModelError
from crossrank.exported import MANIFEST, held_variants, read_manifest

log = logging.getLogger("crossrank")

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"


def default_model() -> str:
    """The cross-encoder used when none is named: ``$CROSSRANK_MODEL``, else :data:`DEFAULT_MODEL`."""
    return os.environ.get("CROSSRANK_MODEL") or DEFAULT_MODEL


# Files a cross-encoder needs; weights are chosen separately so we never fetch two formats.
_META_PATTERNS = ["*.json", "*.txt", "*.model", "sentencepiece*"]
_POSITIVE_LABELS = ("relevant", "positive", "entailment", "true", "yes", "label_1", "1")
# Architectures whose position ids start after the padding index (position limit = max_pos - pad - 1).
_OFFSET_POSITION_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text"}


@dataclass(frozen=True)
class ModelInfo:
    """What crossrank learned from a model directory, before loading any weights."""

    name: str
    path: Path
    num_labels: int
    positive_index: int
    position_limit: int
    declared_max_length: int | None
    model_type: str
    uses_token_types: bool
    fingerprint: str
    kind: str = "cross-encoder"  # the model family's kind (scoring/families.py)
    template: str | None = None  # causal-LM rerankers: the prompt template's name (prompts.py)
    # An exported folder (`crossrank export`, crossrank/exported.py): the file variants it holds, and
    # nothing else is ever built for it. None: a source model (weights), exported to the cache on demand.
    exported: tuple[str, ...] | None = None

    @property
    def default_max_length(self) -> int:
        declared = self.declared_max_length
        return min(declared, self.position_limit) if declared else self.position_limit


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or os.path.exists(model) or model.count("/") > 1 or "\\" in model


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def resolve_model_dir(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_folder: str | None = None,
) -> Path:
    """Return a local directory holding the model's config, tokenizer and weights."""
    name = os.fspath(model)
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(f"model must be a Hugging Face id or a local directory, got {model!r}")
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model directory {str(path)!r} does not exist: pass the folder that holds config.json "
                "and the weights (e.g. ../shared/models/crossrank-minilm-l6-scifact)"
            )
        return path
    offline = local_files_only or _offline_env()
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with sentence-transformers
        raise ModelNotFoundError(f"cannot resolve Hub id {name!r}: huggingface_hub is missing") from exc
    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": cache_folder, "local_files_only": offline}
    try:
        path = Path(snapshot_download(name, allow_patterns=_META_PATTERNS, **kwargs))
        if not any(path.glob("*.safetensors")):
            try:
                path = Path(snapshot_download(name, allow_patterns=["*.safetensors"], **kwargs))
            except Exception:
                path = Path(snapshot_download(name, allow_patterns=["pytorch_model.bin"], **kwargs))
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        why = (
            "downloads are disabled (local_files_only=True or HF_HUB_OFFLINE=1) and it is not in the "
            "local Hugging Face cache"
            if offline
            else "the Hugging Face Hub could not be reached and it is not in the local cache"
        )
        raise ModelNotFoundError(
            f"model {name!r} not found: {why}. Pass a local model directory instead "
            "(Reranker('/path/to/model'), --model DIR or $CROSSRANK_MODEL), or download it once where there is network "
            f"(`hf download {name}`) and set HF_HUB_OFFLINE=1."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"model {name!r} does not exist on the Hugging Face Hub (or is private: set HF_TOKEN); "
            "check the spelling, or pass a local directory"
        ) from exc
    except OSError as exc:
        raise ModelNotFoundError(
            f"model {name!r} could not be fetched ({exc}); check connectivity, or pass a local directory "
            "and set HF_HUB_OFFLINE=1"
        ) from exc
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is unreadable or not valid JSON ({exc}); re-download the model") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object; re-download the model")
    return data


def _weights(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin"} and p.is_file())


def fingerprint(path: Path) -> str:
    """Content hash of config, tokenizer, custom code and weight sizes+heads: changes when the model changes."""
    h = hashlib.sha256()
    # Custom-code models (trust_remote_code): their modeling *.py files change the scores too. An
    # exported folder has no weights: its manifest (the graphs' SHA-256 and the source's hash) stands in.
    for p in [
        *(path / n for n in ("config.json", "tokenizer.json", "tokenizer_config.json", MANIFEST)),
        *sorted(path.glob("*.py")),
    ]:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    for w in _weights(path):
        st = w.stat()
        h.update(f"{w.name}:{st.st_size}".encode())
        with w.open("rb") as f:  # head and tail are enough to tell trained weights apart, and cheap
            h.update(f.read(1 << 20))
            if st.st_size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _positive_index(id2label: dict[str, Any]) -> int:
    for idx, label in id2label.items():
        if str(label).strip().lower() in _POSITIVE_LABELS:
            return int(idx)
    return 1


def _causal_template(cfg: dict[str, Any], name: str, template: str | None) -> str:
    from crossrank.prompts import TEMPLATES, names_checkpoint, template_for_model_type

    if template is not None:
        if template not in TEMPLATES:
            raise InvalidArgumentError(f"template={template!r} is not known; choose one of {', '.join(TEMPLATES)}")
        return template
    found = template_for_model_type(str(cfg.get("model_type", "")))
    if found is None:
        raise UnsupportedModelError(
            f"{name} is a causal LM ({(cfg.get('architectures') or ['?'])[0]}) with no known reranker prompt: "
            f"pass template= one of {', '.join(TEMPLATES)} if it is a yes/no reranker of that family"
        )
    if not names_checkpoint(found, name):
        # Other rerankers share these architectures with other prompts (e.g. a Qwen3 LM that is not
        # Qwen3-Reranker): say which prompt is assumed, so a wrong one is not silent.
        log.warning(
            "%s: a %s causal LM not named as a %s checkpoint (%s); scoring it with that family's prompt and "
            "answer tokens. Pass template=%r to confirm, or another family if it was trained with another prompt",
            name,
            cfg.get("model_type"),
            found.name,
            ", ".join(found.checkpoints),
            found.name,
        )
    return found.name


def _declared_length(path: Path) -> int | None:
    tok_cfg_path = path / "tokenizer_config.json"
    if tok_cfg_path.is_file():
        mml = _read_json(tok_cfg_path).get("model_max_length")
        if isinstance(mml, (int, float)) and 0 < mml < 1_000_000:
            return int(mml)
    return None


def inspect_model(path: Path, name: str | None = None, *, template: str | None = None) -> ModelInfo:
    """Read config.json and tokenizer_config.json; refuse what is not a usable reranker.

    ``*ForSequenceClassification`` models are cross-encoders; ``*ForCausalLM`` models are yes/no
    rerankers when their prompt template is known from ``model_type`` or given as ``template``.

    Raises:
        ModelLoadError: config or weights missing or unreadable.
        UnsupportedModelError: not a reranker (a bi-encoder, a classifier, an unknown causal LM).
    """
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(
            f"{path} has no config.json: it is not a Hugging Face model directory "
            "(re-download it, or point to the folder that contains config.json)"
        )
    cfg = _read_json(cfg_path)
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("family") != "cross-encoder":
        raise UnsupportedModelError(
            f"{path} was exported as a {manifest.get('family')!r}; this crossrank scores exported cross-encoders only"
        )
    if manifest is not None and template is not None:
        raise UnsupportedModelError(
            f"{path} is an exported cross-encoder folder (crossrank export); template= applies to causal-LM "
            "rerankers, which are not exportable: load their source model (pip install 'crossrank[torch]')"
        )
    if manifest is None and not _weights(path) and not (path / "onnx").is_dir():
        raise ModelLoadError(
            f"{path} has no weights (model.safetensors or pytorch_model.bin): the download is incomplete"
        )
    archs = cfg.get("architectures") or []
    if template is not None or any(a.endswith("ForCausalLM") for a in archs):
        tname = _causal_template(cfg, name or str(path), template)
        from crossrank.prompts import TEMPLATES

        return ModelInfo(
            name=name or str(path),
            path=path,
            num_labels=1,
            positive_index=0,
            position_limit=int(cfg.get("max_position_embeddings") or 8192),
            declared_max_length=min(_declared_length(path) or 1 << 30, TEMPLATES[tname].default_max_length),
            model_type=str(cfg.get("model_type", "")),
            uses_token_types=False,
            fingerprint=fingerprint(path),
            kind="causal-lm",
            template=tname,
        )
    if archs and not any("SequenceClassification" in a for a in archs):
        raise UnsupportedModelError(
            f"{name or path} is a {archs[0]}, not a reranker: crossrank needs a "
            "*ForSequenceClassification cross-encoder such as cross-encoder/ms-marco-MiniLM-L6-v2, or a "
            "*ForCausalLM yes/no reranker such as Qwen/Qwen3-Reranker-0.6B "
            "(bi-encoders like all-MiniLM-L6-v2 belong in the first stage)"
        )
    id2label = cfg.get("id2label") or {}
    # transformers omits id2label for the default 2-label head, and defaults num_labels to 2.
    num_labels = int(cfg.get("num_labels") or len(id2label) or 2)
    if num_labels > 2:
        raise UnsupportedModelError(
            f"{name or path} has a {num_labels}-label head ({list(id2label.values())}); crossrank supports "
            "relevance heads with 1 logit or 2 logits (negative, positive). Use a reranker, not an NLI/classifier."
        )
    positive = 0 if num_labels == 1 else _positive_index(id2label)
    model_type = str(cfg.get("model_type", ""))
    limit = int(cfg.get("max_position_embeddings") or 512)
    if model_type in _OFFSET_POSITION_TYPES:
        limit -= int(cfg.get("pad_token_id") or 1) + 1
    declared = _declared_length(path)
    return ModelInfo(
        name=name or str(path),
        path=path,
        num_labels=num_labels,
        positive_index=positive,
        position_limit=limit,
        declared_max_length=declared,
        model_type=model_type,
        uses_token_types=int(cfg.get("type_vocab_size") or 0) > 1,
        fingerprint=fingerprint(path),
        exported=held_variants(manifest) if manifest is not None else None,
    )


def effective_max_length(info: ModelInfo, requested: int | None) -> int:
    """The model's declared length by default; never past the position-embedding limit."""
    if requested is None:
        return info.default_max_length
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 8:
        raise InvalidArgumentError(f"max_length must be an int >= 8, got {requested!r}")
    if requested > info.position_limit:
        raise InvalidArgumentError(
            f"max_length={requested} exceeds what {info.name} can encode ({info.position_limit} positions); "
            f"use max_length <= {info.position_limit} and long_documents='windows' for longer texts"
        )
    if info.declared_max_length and requested > info.declared_max_length:
        # Allowed (the positions exist), but models are trained at their declared length: the shared
        # SciFact model falls from nDCG@10 0.688 to 0.587 at 512 tokens. Windows keep the length.
        warnings.warn(
            f"max_length={requested} is above the {info.declared_max_length} tokens {info.name} declares; "
            "scores past the trained length are usually worse. Prefer the declared length with "
            "long_documents='windows' for long texts.",
            UserWarning,
            stacklevel=3,
        )
    return requested
