"""Build tiny random cross-encoders on disk, for tests that must never download weights.

Every family crossrank promises to serve (BERT, ELECTRA, RoBERTa, XLM-RoBERTa, DeBERTa-v2, ModernBERT,
DistilBERT, and a custom architecture behind ``trust_remote_code``) gets a real
``*ForSequenceClassification`` with a hidden size of 16-32 and one or two layers, saved next to a
real tokenizer of that family's shape: WordPiece, byte-level BPE or Unigram (SentencePiece-like),
with the family's own special tokens, pair template and declared ``model_input_names``. So every
code path (pair template, which inputs exist, token-type ranges, export, quantization) runs for
real, in well under a second per model, with nothing fetched from the Hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


# ----------------------------------------------------------------------------------------------------
# Every family
# ----------------------------------------------------------------------------------------------------

#: Families built into transformers that :func:`make_tiny_model` builds (no custom code needed).
FAMILIES: tuple[str, ...] = ("bert", "electra", "roberta", "xlm-roberta", "deberta-v2", "modernbert", "distilbert")
#: A custom architecture whose code ships in the model directory (``auto_map`` in config.json, like the
#: Jina rerankers): loading it needs ``trust_remote_code=True``.
REMOTE_CODE_FAMILY = "remote-code"

_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
_DIGITS = [str(d) for d in range(10)]
_PUNCT = list(".,;:!?'\"()-")


def _added(tokens: list[str]) -> list[Any]:
    from tokenizers import AddedToken

    return [AddedToken(t, special=True, normalized=False) for t in tokens]


def _bert_pairs(ids: dict[str, int], cls: str = "[CLS]", sep: str = "[SEP]") -> Any:
    """BERT's post-processor: ``cls A sep`` (type 0), then ``B sep`` (type 1) for a pair."""
    from tokenizers import processors

    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
    )


def _wordpiece(front: list[str]) -> Any:
    """BERT-style lower-cased WordPiece, as BertTokenizer builds it; ``front``: pad, unk, cls, sep, mask."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    vocab = list(dict.fromkeys(front + _WORDS + _LETTERS + _DIGITS + _PUNCT + ["##" + c for c in _LETTERS]))
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token=front[1]))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = _bert_pairs(ids, cls=front[2], sep=front[3])
    tok.add_special_tokens(_added(front))
    return tok


def _byte_bpe(front: list[str], back: list[str], template: str) -> Any:
    """Byte-level BPE (GPT-2 style, no prefix space): ``template`` is ``"roberta"`` or ``"bert"``.

    The vocabulary is the 256-symbol byte alphabet plus every prefix of each known word (with and
    without the leading-space marker), merged left to right; special tokens sit at both ends, as
    in RoBERTa (``<s> <pad> </s> <unk>`` first) and ModernBERT (``[CLS] [SEP] [PAD]`` last).
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab: dict[str, int] = {}
    for t in front + sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(t, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        for form in (word, "\u0120" + word):
            piece = form[0]
            for ch in form[1:]:
                merged = piece + ch
                if merged not in vocab:
                    vocab[merged] = len(vocab)
                    merges.append((piece, ch))
                piece = merged
    for t in back:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if template == "roberta":
        tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    else:
        tok.post_processor = _bert_pairs(vocab)
    tok.add_special_tokens(_added(front + back))
    return tok


def _unigram(front: list[str], back: list[str], unk: str, style: str) -> Any:
    """SentencePiece-like Unigram with the ``▁`` word marker: ``style`` is ``"xlm-roberta"`` or ``"deberta-v2"``."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pieces: list[tuple[str, float]] = [(t, 0.0) for t in front]
    pieces += [("\u2581" + w, -5.0 - i / 100) for i, w in enumerate(_WORDS)]
    pieces += [("\u2581", -7.0)] + [("\u2581" + c, -8.0) for c in _LETTERS]
    pieces += [(c, -9.0) for c in _LETTERS + _DIGITS + _PUNCT]
    pieces += [(t, 0.0) for t in back]
    ids = {p: i for i, (p, _) in enumerate(pieces)}
    tok = Tokenizer(Unigram(pieces, unk_id=ids[unk], byte_fallback=False))
    meta = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    if style == "xlm-roberta":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), meta])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
        )
    else:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(), normalizers.Strip(False, True)]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence([meta])
        tok.post_processor = _bert_pairs(ids)
    tok.add_special_tokens(_added(front + back))
    return tok


def _specials(**tokens: str) -> dict[str, str]:
    return {f"{role}_token": token for role, token in tokens.items()}


_BERT_SPECIALS = _specials(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]")
_ROBERTA_SPECIALS = _specials(bos="<s>", eos="</s>", unk="<unk>", sep="</s>", pad="<pad>", cls="<s>", mask="<mask>")
_WITH_TYPES = ["input_ids", "token_type_ids", "attention_mask"]
_NO_TYPES = ["input_ids", "attention_mask"]


def _tokenizer(family: str) -> tuple[Any, dict[str, Any]]:
    """The family's tokenizer and the tokenizer_config.json its real checkpoints ship.

    ``model_input_names`` is declared as the family declares it: only BERT, ELECTRA and DeBERTa-v2
    tokenizers produce ``token_type_ids``. The custom-code family uses the XLM-R layout (as the Jina
    v2 rerankers do).
    """
    if family in ("bert", "electra", "distilbert"):
        name = {"bert": "BertTokenizer", "electra": "ElectraTokenizer", "distilbert": "DistilBertTokenizer"}[family]
        names = _NO_TYPES if family == "distilbert" else _WITH_TYPES
        config = {"tokenizer_class": name, "do_lower_case": True, **_BERT_SPECIALS, "model_input_names": names}
        return _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]), config
    if family == "roberta":
        config = {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": False, "trim_offsets": True}
        config.update({**_ROBERTA_SPECIALS, "model_input_names": _NO_TYPES})
        return _byte_bpe(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"], "roberta"), config
    if family == "modernbert":
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **_BERT_SPECIALS, "model_input_names": _NO_TYPES}
        config.update(_specials(bos="[CLS]", eos="[SEP]"))
        return _byte_bpe(
            ["<|endoftext|>", "<|padding|>"], ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], "bert"
        ), config
    if family in ("xlm-roberta", REMOTE_CODE_FAMILY):
        config = {"tokenizer_class": "XLMRobertaTokenizer", **_ROBERTA_SPECIALS, "model_input_names": _NO_TYPES}
        return _unigram(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"], "<unk>", "xlm-roberta"), config
    if family == "deberta-v2":
        config = {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False, "split_by_punct": False}
        config.update({**_BERT_SPECIALS, **_specials(bos="[CLS]", eos="[SEP]"), "model_input_names": _WITH_TYPES})
        return _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], ["[MASK]"], "[UNK]", "deberta-v2"), config
    raise ValueError(f"unknown family {family!r}; choose one of {(*FAMILIES, REMOTE_CODE_FAMILY)}")


def _save_tokenizer(tok: Any, config: dict[str, Any], out: Path, model_max_length: int) -> None:
    """tokenizer.json, tokenizer_config.json and, for WordPiece families, vocab.txt (as real BERT dirs have)."""
    tok.save(str(out / "tokenizer.json"))
    config = {**config, "model_max_length": model_max_length, "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if config["tokenizer_class"] in ("BertTokenizer", "ElectraTokenizer", "DistilBertTokenizer"):
        vocab = tok.get_vocab()
        (out / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.__getitem__)) + "\n", encoding="utf-8")


def _config(family: str, vocab: dict[str, int], max_length: int) -> Any:
    """The smallest config of ``family`` that still runs every code path of its architecture."""
    import transformers

    small: dict[str, Any] = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    kwargs: dict[str, Any]
    if family in ("bert", "electra"):
        name = "BertConfig" if family == "bert" else "ElectraConfig"
        kwargs = {**small, "max_position_embeddings": max_length, "type_vocab_size": 2, "pad_token_id": 0}
        if family == "electra":
            kwargs["embedding_size"] = 16
    elif family in ("roberta", "xlm-roberta"):
        # Positions start after the padding index (2 + max_length of them), and one token type only.
        name = "RobertaConfig" if family == "roberta" else "XLMRobertaConfig"
        kwargs = {
            **small,
            "max_position_embeddings": max_length + 2,
            "type_vocab_size": 1,
            "pad_token_id": vocab["<pad>"],
            "bos_token_id": vocab["<s>"],
            "eos_token_id": vocab["</s>"],
        }
    elif family == "deberta-v2":
        # DeBERTa-v3 layout (mxbai-rerank-*-v1): no token-type embeddings, relative attention with log
        # buckets (few buckets, so short texts already reach the logarithmic range), no absolute positions.
        name = "DebertaV2Config"
        kwargs = {
            **small,
            "max_position_embeddings": max_length,
            "type_vocab_size": 0,
            "relative_attention": True,
            "position_buckets": 8,
            "max_relative_positions": -1,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "pooler_hidden_size": 16,
            "pad_token_id": vocab["[PAD]"],
        }
    elif family == "modernbert":
        # Two layers, one global and one sliding-window (window 8), mean pooling (gte-reranker-modernbert).
        name = "ModernBertConfig"
        kwargs = {
            **small,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "global_attn_every_n_layers": 2,
            "local_attention": 8,
            "max_position_embeddings": max_length,
            "classifier_pooling": "mean",
            "pad_token_id": vocab["[PAD]"],
            "cls_token_id": vocab["[CLS]"],
            "sep_token_id": vocab["[SEP]"],
            "bos_token_id": vocab["[CLS]"],
            "eos_token_id": vocab["[SEP]"],
        }
    elif family == "distilbert":
        name = "DistilBertConfig"
        kwargs = {"max_position_embeddings": max_length, "dim": 16, "n_layers": 1, "n_heads": 2, "hidden_dim": 32}
    else:
        raise ValueError(f"unknown family {family!r}")
    config_cls: Any = getattr(transformers, name)
    return config_cls(vocab_size=len(vocab), **kwargs)


# Query/key projections of every family (BERT-likes, DeBERTa, DistilBERT, ModernBERT, the custom model).
_QUERY_KEY = ("query", "key", "q_lin", "k_lin", "Wqkv", "qkv")


def _spread_weights(model: Any) -> None:
    """Redraw the weight matrices wider than the usual 0.02 init, so scores differ visibly between texts.

    Query/key projections are drawn narrower (0.2, not 0.5) and DeBERTa's relative-position table
    keeps its init: wide ones make a single layer's attention lock onto a few positions of the
    query, and then every document gets the same score.
    """
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and "rel_embeddings" not in name:
                p.normal_(0.0, 0.2 if any(k in name for k in _QUERY_KEY) else 0.5)


_REMOTE_MODULE = "modeling_tiny_reranker"
_REMOTE_CODE = '''"""A tiny custom cross-encoder whose code ships in its model directory (needs trust_remote_code)."""

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers 4
    from transformers import PretrainedConfig as PreTrainedConfig


class TinyRerankerConfig(PreTrainedConfig):
    model_type = "tiny-reranker"

    def __init__(self, vocab_size=100, hidden_size=16, max_position_embeddings=128, pad_token_id=1, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class TinyRerankerForSequenceClassification(PreTrainedModel):
    config_class = TinyRerankerConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        h = config.hidden_size
        self.embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.positions = nn.Embedding(config.max_position_embeddings, h)
        self.qkv = nn.Linear(h, 3 * h)
        self.out = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h)
        self.classifier = nn.Linear(h, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, return_dict=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.embeddings(input_ids) + self.positions(positions)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(x.shape[-1])
        scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
        x = self.norm(x + self.out(scores.softmax(-1) @ v))
        return SequenceClassifierOutput(logits=self.classifier(torch.tanh(x[:, 0])))
'''


def _remote_model(out: Path, vocab: dict[str, int], num_labels: int, max_length: int) -> tuple[Any, Any]:
    """Write the custom code into ``out``; return its config and model class, imported from that very file."""
    import importlib.util

    code = out / f"{_REMOTE_MODULE}.py"
    code.write_text(_REMOTE_CODE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"crossrank_tiny_remote_{abs(hash(str(out)))}", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.TinyRerankerConfig(
        vocab_size=len(vocab), hidden_size=16, max_position_embeddings=max_length, pad_token_id=vocab["<pad>"]
    )
    config.num_labels = num_labels
    return config, module.TinyRerankerForSequenceClassification


def make_tiny_model(
    path: str | Path,
    family: str = "bert",
    *,
    num_labels: int = 1,
    seed: int = 0,
    max_length: int = 128,
) -> Path:
    """Write a tiny random cross-encoder of ``family`` (see :data:`FAMILIES`, :data:`REMOTE_CODE_FAMILY`) to ``path``.

    The head has ``num_labels`` logits (1, or 2 = negative, positive). Weights are drawn with a
    larger spread than the usual 0.02 init so that scores differ visibly between texts. Returns the path.
    """
    import torch
    import transformers

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok, tok_config = _tokenizer(family)
    vocab = tok.get_vocab()
    labels = {i: f"LABEL_{i}" for i in range(num_labels)}
    torch.manual_seed(seed)
    if family == REMOTE_CODE_FAMILY:
        config, model_cls = _remote_model(out, vocab, num_labels, max_length)
        model = model_cls(config)
        arch = model_cls.__name__
    else:
        config = _config(family, vocab, max_length)
        config.num_labels = num_labels
        model = transformers.AutoModelForSequenceClassification.from_config(config)
        arch = type(model).__name__
    config.id2label = labels
    config.label2id = {v: k for k, v in labels.items()}
    config.architectures = [arch]
    config.sbert_ce_default_activation_function = "torch.nn.modules.linear.Identity"  # raw logits
    _spread_weights(model)
    model.eval()
    model.save_pretrained(out)
    if family == REMOTE_CODE_FAMILY:
        cfg_path = out / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["auto_map"] = {
            "AutoConfig": f"{_REMOTE_MODULE}.TinyRerankerConfig",
            "AutoModelForSequenceClassification": f"{_REMOTE_MODULE}.{arch}",
        }
        cfg_path.write_text(json.dumps(cfg, indent=2))
    _save_tokenizer(tok, tok_config, out, max_length)
    return out
