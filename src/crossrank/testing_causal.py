"""Build tiny random causal-LM rerankers on disk (Qwen3, Qwen2, Gemma architectures), for tests.

Nothing is downloaded: a 1-layer model from its config and a byte-level BPE tokenizer with the
chat special tokens and single-token answers (yes/no, 1/0, Yes). Used by the causal-reranker
tests and anywhere a real local causal LM is needed (e.g. an OpenAI-compatible test server).
"""

from __future__ import annotations

from pathlib import Path

from crossrank.prompts import TEMPLATES, PromptTemplate


def make_tiny_causal_reranker(path: str | Path, family: str = "qwen3", *, seed: int = 0) -> Path:
    """A random 1-layer causal LM of ``family``'s architecture with a byte-level BPE tokenizer.

    The tokenizer has the chat special tokens and single tokens for the answers (yes/no, 1/0, Yes),
    and splits text the same way whole or in parts, so a prompt tokenized in pieces equals the
    prompt tokenized at once. The Qwen3 model also ships a chat template rendering the
    Qwen3-Reranker prompt for (query, document) pairs, as sentence-transformers expects.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
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
    fast.save_pretrained(path)
    cfg = AutoConfig.for_model(
        family,
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
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


def _pair_chat_template(t: PromptTemplate) -> str:
    """A Jinja chat template that renders ``t``'s prompt from sentence-transformers' query/document roles."""
    head = t.head.replace("{instruction}", "{{ instruction | default('" + t.default_instruction + "') }}")
    head = head.replace("{query}", "{{ q }}")
    body = t.suffix.rstrip("\n")
    newlines = len(t.suffix) - len(body)  # Jinja drops a template's trailing newline: render them explicitly
    return (
        '{%- set q = (messages | selectattr("role", "eq", "query") | first).content[0].text -%}'
        '{%- set d = (messages | selectattr("role", "eq", "document") | first).content[0].text -%}'
        + head
        + t.document.replace("{document}", "{{ d }}")
        + body
        + '{{ "\\n" * '
        + str(newlines)
        + " }}"
    )
