"""Build tiny random cross-encoders on disk, for tests that must never download weights.

A real ``BertForSequenceClassification`` with hidden size 16 and one layer, saved with a real
WordPiece ``vocab.txt`` and fast tokenizer: every code path (tokenizer, torch, ONNX export) runs for
real, in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

_WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "that",
    "by",
    "this",
    "be",
    "are",
    "as",
    "it",
    "at",
    "from",
    "or",
    "an",
    "was",
    "we",
    "can",
    "not",
    "python",
    "snake",
    "code",
    "program",
    "language",
    "cell",
    "cells",
    "gene",
    "protein",
    "cancer",
    "risk",
    "heart",
    "drug",
    "dose",
    "aspirin",
    "vitamin",
    "study",
    "trial",
    "effect",
    "patients",
    "disease",
    "blood",
    "sugar",
    "insulin",
    "brain",
    "sleep",
    "coffee",
    "tea",
    "water",
    "fire",
    "red",
    "blue",
    "green",
    "what",
    "does",
    "why",
    "how",
]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path) -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    punct = list(".,;:!?'\"()-")
    subwords = ["##" + c for c in letters]
    vocab = list(dict.fromkeys(_SPECIAL + _WORDS + letters + digits + punct + subwords))
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


def make_tiny_cross_encoder(
    path: str | Path,
    *,
    num_labels: int = 1,
    max_position_embeddings: int = 128,
    model_max_length: int | None = 128,
    seed: int = 0,
    id2label: dict[int, str] | None = None,
) -> Path:
    """Write a tiny random BERT cross-encoder to ``path`` and return the path."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # type: ignore[attr-defined]

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(out / "vocab.txt")
    labels = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_position_embeddings,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        architectures=["BertForSequenceClassification"],
    )
    config.sbert_ce_default_activation_function = "torch.nn.modules.linear.Identity"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # larger weights than the 0.02 init, so scores differ visibly between texts
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    model.eval()
    model.save_pretrained(out)
    import inspect

    vocab_arg = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tok = BertTokenizerFast(**{vocab_arg: str(out / "vocab.txt")}, do_lower_case=True)
    if model_max_length is not None:
        tok.model_max_length = model_max_length
    tok.save_pretrained(out)
    if model_max_length is None:  # simulate a tokenizer that declares no length
        cfg_path = out / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("model_max_length", None)
        cfg_path.write_text(json.dumps(cfg))
    return out
