"""Tiny random multi-vector model folders in the three formats users have, for tests (nothing downloaded).

* :func:`make_tiny_multi_vector`: a sentence-transformers ``MultiVectorEncoder`` save (BERT,
  token-level ``Dense``, ``MultiVectorMask``, token ``Normalize``; ``[Q] `` / ``[D] `` prompts);
* :func:`make_tiny_pylate`: a PyLate save as PyLate writes it (the backbone at the root, a
  ``pylate.models.Dense.Dense`` in ``1_Dense/``, ``config_sentence_transformers.json`` with
  ``model_type: ColBERT``, ``[unused0]`` / ``[unused1]`` prefixes, query and document lengths,
  ``do_query_expansion`` and a punctuation skiplist);
* :func:`make_tiny_stanford_colbert`: a Stanford ColBERT checkpoint as ``HF_ColBERT.save_pretrained``
  writes it (``architectures: ["HF_ColBERT"]``, BERT weights under ``bert.`` and the projection as
  ``linear.weight`` in one ``model.safetensors``) with its ``artifact.metadata``.

Weights are drawn wider than the usual 0.02 init so that different texts get visibly different vectors.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

from crossrank.testing import _WORDS

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]


def _bert_folder(out: Path, *, hidden: int, seed: int, max_length: int) -> tuple[Any, Any]:
    """A tiny BERT backbone + WordPiece tokenizer (with ``[unused0]`` / ``[unused1]`` in the vocabulary, as BERT's)."""
    import inspect

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    out.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = list(
        dict.fromkeys(
            _SPECIAL
            + _WORDS
            + letters
            + [str(d) for d in range(10)]
            + list(string.punctuation)
            + ["##" + c for c in letters]
        )
    )
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_length,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2 if ("query" in name or "key" in name) else 0.5)
    model.eval()
    arg = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tok = BertTokenizerFast(**{arg: str(out / "vocab.txt")}, do_lower_case=True)
    tok.model_max_length = max_length
    return model, tok


def _projection(hidden: int, dim: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(dim, hidden, generator=g) * 0.5


def make_tiny_multi_vector(
    path: str | Path,
    *,
    hidden: int = 32,
    dim: int = 16,
    query_length: int = 16,
    document_length: int = 48,
    seed: int = 0,
) -> Path:
    """Write a tiny random sentence-transformers ``MultiVectorEncoder`` to ``path``; returns the path."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        model, tok = _bert_folder(base, hidden=hidden, seed=seed, max_length=128)
        model.save_pretrained(base)
        tok.save_pretrained(base)
        backbone = Transformer(str(base), query_length=query_length, document_length=document_length)
    dense = Dense(
        hidden,
        dim,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=_projection(hidden, dim, seed),
        module_input_name="token_embeddings",
    )
    encoder = MultiVectorEncoder(
        modules=[backbone, dense, MultiVectorMask(), Normalize(module_input_name="token_embeddings")],
        prompts={"query": "[Q] ", "document": "[D] "},
        device="cpu",
    )
    encoder.save(str(out))
    return out


def make_tiny_pylate(
    path: str | Path,
    *,
    hidden: int = 32,
    dim: int = 16,
    query_length: int = 16,
    document_length: int = 48,
    do_query_expansion: bool = True,
    seed: int = 0,
) -> Path:
    """Write a tiny random model in PyLate's save format (see the module docs) to ``path``; returns the path."""
    from safetensors.torch import save_file

    out = Path(path)
    model, tok = _bert_folder(out, hidden=hidden, seed=seed, max_length=128)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
            ],
            indent=2,
        )
    )
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": document_length - 1, "do_lower_case": False})
    )
    (out / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "__version__": {"sentence_transformers": "3.4.1", "transformers": "4.48.2", "pytorch": "2.5.1"},
                "prompts": {},
                "default_prompt_name": None,
                "similarity_fn_name": "MaxSim",
                "query_prefix": "[unused0]",
                "document_prefix": "[unused1]",
                "query_length": query_length,
                "document_length": document_length,
                "attend_to_expansion_tokens": False,
                "skiplist_words": list(string.punctuation),
                "do_query_expansion": do_query_expansion,
                "model_type": "ColBERT",
            },
            indent=2,
        )
    )
    dense = out / "1_Dense"
    dense.mkdir(exist_ok=True)
    (dense / "config.json").write_text(
        json.dumps(
            {
                "in_features": hidden,
                "out_features": dim,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
                "use_residual": False,
            }
        )
    )
    save_file({"linear.weight": _projection(hidden, dim, seed).contiguous()}, str(dense / "model.safetensors"))
    return out


def make_tiny_stanford_colbert(
    path: str | Path,
    *,
    hidden: int = 32,
    dim: int = 16,
    query_maxlen: int = 16,
    doc_maxlen: int = 48,
    attend_to_mask_tokens: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random Stanford ColBERT checkpoint (see the module docs) to ``path``; returns the path."""
    from safetensors.torch import save_file

    out = Path(path)
    model, tok = _bert_folder(out, hidden=hidden, seed=seed, max_length=128)
    tok.save_pretrained(out)
    config = model.config.to_dict()
    config["architectures"] = ["HF_ColBERT"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    weights = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    weights["linear.weight"] = _projection(hidden, dim, seed).contiguous()
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "artifact.metadata").write_text(
        json.dumps(
            {
                "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]",
                "query_token": "[Q]",
                "doc_token": "[D]",
                "query_maxlen": query_maxlen,
                "doc_maxlen": doc_maxlen,
                "attend_to_mask_tokens": attend_to_mask_tokens,
                "mask_punctuation": True,
                "similarity": "cosine",
                "dim": dim,
                "checkpoint": "bert-base-uncased",
            },
            indent=2,
        )
    )
    return out
