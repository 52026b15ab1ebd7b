"""Tiny random models and data for training tests: nothing downloaded, every run in seconds.

:func:`make_tiny_bi_encoder` is the bi-encoder counterpart of
:func:`crossrank.testing.make_tiny_cross_encoder` (same WordPiece vocabulary, so the two read
text alike): a 2-layer, 16-wide BERT with mean pooling and normalisation, saved as a
sentence-transformers folder that Chroma's embedding function and the trainers load like any
other. :func:`tiny_corpus` is a small corpus of near-miss documents with one query per topic.
"""

from __future__ import annotations

from pathlib import Path

TOPICS: tuple[str, ...] = (
    "aspirin and heart attack risk",
    "coffee and sleep quality",
    "python snake care",
    "python programming lists",
    "vitamin d and bone health",
    "exercise and blood pressure",
    "cancer cell growth",
    "solar power panels",
)


def make_tiny_bi_encoder(path: str | Path, *, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random sentence-transformers bi-encoder to ``path`` and return the path.

    Weights are drawn wider than BERT's 0.02 initialisation (as the tiny cross-encoders are), so
    different texts get visibly different embeddings.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from crossrank.testing import make_tiny_cross_encoder

    out = Path(path)
    raw = out / "_encoder"
    vocab_donor = make_tiny_cross_encoder(out / "_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(vocab_donor))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    model.save_pretrained(str(raw))
    tokenizer.save_pretrained(str(raw))
    encoder = Transformer(str(raw), max_seq_length=96)
    st = SentenceTransformer(
        modules=[encoder, Pooling(encoder.get_embedding_dimension(), "mean"), Normalize()], device="cpu"
    )
    st.save(str(out / "model"))
    return out / "model"


def tiny_corpus(per_topic: int = 4) -> dict[str, str]:
    """``per_topic`` short documents on each of :data:`TOPICS`: id ``d<topic>-<n>`` -> text."""
    out = {}
    for i, topic in enumerate(TOPICS):
        for j in range(per_topic):
            out[f"d{i}-{j}"] = (
                f"Study {j} on {topic}. The results show a link between {topic} in the data. "
                f"More work is needed on {topic} for patients and for the public."
            )
    return out


def tiny_queries() -> list[tuple[str, str]]:
    """One ``(query, relevant document id)`` per topic of :func:`tiny_corpus`."""
    return [(f"is there an effect of {topic}", f"d{i}-0") for i, topic in enumerate(TOPICS)]
