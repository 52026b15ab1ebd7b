"""Causal-LM rerankers (Qwen3-Reranker, mxbai-rerank-v2, bge-reranker-v2-gemma) on tiny random models.

Scores must equal a direct transformers computation of the same formula — logit(yes) - logit(no)
at the last position of the family's prompt (logit(Yes) alone for bge-gemma) — and, where the model
ships a chat template for (query, document) pairs, sentence-transformers' own ``CrossEncoder``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank import ExportError, InvalidArgumentError, Reranker, UnsupportedModelError
from crossrank.prompts import TEMPLATES, PromptTemplate
from crossrank.testing_causal import make_tiny_causal_reranker

FAMILIES = {"qwen3": "qwen3-reranker", "qwen2": "mxbai-rerank-v2", "gemma": "bge-reranker-v2-gemma"}
QUERY = "does aspirin prevent heart attacks"
DOCS = [
    "aspirin lowers the risk of heart attack",
    "pythons are snakes",
    "yes no yes",
    "coffee and sleep " * 3,
    "",
]


@pytest.fixture(scope="module")
def causal_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("causal")
    return {fam: make_tiny_causal_reranker(root / fam, fam, seed=i) for i, fam in enumerate(FAMILIES)}


def _direct(
    path: Path, template: PromptTemplate, query: str, docs: list[str], instruction: str | None = None
) -> list[float]:
    """The family's formula computed straight with transformers, one unpadded prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()

    def tid(t: str) -> int:
        (i,) = tok(t, add_special_tokens=False)["input_ids"]
        return int(i)

    out = []
    for d in docs:
        text = (
            template.prefix
            + template.format_query(query, instruction)
            + template.separator
            + template.format_document(d)
            + "".join(template.format_tail())
        )
        ids = ([tok.bos_token_id] if template.bos else []) + tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            last = model(torch.tensor([ids])).logits[0, -1]
        score = float(last[tid(template.yes)])
        if template.no is not None:
            score -= float(last[tid(template.no)])
        out.append(score)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_scores_equal_the_direct_formula(causal_models: dict[str, Path], family: str) -> None:
    rr = Reranker(causal_models[family])
    assert rr.info.kind == "causal-lm" and rr.info.template == FAMILIES[family]
    assert rr.backend_name.startswith("torch")
    expected = _direct(causal_models[family], TEMPLATES[FAMILIES[family]], QUERY, DOCS)
    got = rr.score(QUERY, DOCS)  # batched and left-padded
    assert got == pytest.approx(expected, abs=1e-4)
    assert list(np.argsort(got)) == list(np.argsort(expected))
    assert await rr.ascore(QUERY, DOCS) == pytest.approx(got, abs=1e-5)
    ranked = rr.rerank(QUERY, DOCS, normalize="sigmoid")
    for r in ranked:  # sigmoid of the log-odds is the family's own P(yes)
        assert r.score == pytest.approx(1 / (1 + math.exp(-expected[r.index])), abs=1e-5)


def test_equals_sentence_transformers_cross_encoder(causal_models: dict[str, Path]) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    path = causal_models["qwen3"]
    ce = CrossEncoder(str(path), local_files_only=True)
    ref = ce.predict([(QUERY, d) for d in DOCS], activation_fn=torch.nn.Identity())
    assert Reranker(path).score(QUERY, DOCS) == pytest.approx([float(x) for x in ref], abs=1e-4)


def test_instruction_and_template_options(causal_models: dict[str, Path], tmp_path: Path) -> None:
    path = causal_models["qwen3"]
    own = "Given a scientific claim, retrieve abstracts that support or refute it"
    with_instruction = Reranker(path, instruction=own).score(QUERY, DOCS)
    assert with_instruction == pytest.approx(_direct(path, TEMPLATES["qwen3-reranker"], QUERY, DOCS, own), abs=1e-4)
    assert with_instruction != pytest.approx(Reranker(path).score(QUERY, DOCS), abs=1e-4)
    # An unknown causal model_type needs template=; with it, it scores like that family.
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in path.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((odd / "config.json").read_text())
    cfg.update(model_type="mystery", architectures=["MysteryForCausalLM"])
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="template="):
        Reranker(odd)
    with pytest.raises(InvalidArgumentError, match="template="):
        Reranker(odd, template="no-such-template")
    assert Reranker(odd, template="mxbai-rerank-v2").info.template == "mxbai-rerank-v2"
    with pytest.raises(InvalidArgumentError, match="must be a str"):
        Reranker(path, instruction=123)  # type: ignore[arg-type]


def test_instruction_is_refused_for_cross_encoders(tiny_model: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="causal-LM"):
        Reranker(tiny_model, backend="torch", instruction="find abstracts")


def test_unknown_causal_lm_is_refused_with_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(UnsupportedModelError, match="template="):
        Reranker(tmp_path)


def test_fast_backends_say_what_to_use(causal_models: dict[str, Path]) -> None:
    with pytest.raises(ExportError, match="backend='torch'"):
        Reranker(causal_models["qwen3"], backend="openvino")
    with pytest.raises(InvalidArgumentError, match="int8"):
        Reranker(causal_models["qwen3"], quantize="int8").score(QUERY, DOCS)
    bf16 = Reranker(causal_models["qwen3"], quantize="bf16")
    scores = bf16.score(QUERY, DOCS)
    assert bf16.backend_name == "torch-bf16" and all(math.isfinite(s) for s in scores)


def test_long_documents_keep_the_answer_slot(causal_models: dict[str, Path]) -> None:
    rr = Reranker(causal_models["qwen3"], max_length=600)
    long_doc = "aspirin heart risk " * 200
    enc = rr.engine.encoder(600).encode(QUERY, [long_doc])
    tail = "".join(TEMPLATES["qwen3-reranker"].format_tail())
    suffix = rr.engine.tokenizer.encode(tail, add_special_tokens=False).ids
    assert len(enc.ids[0]) == 600 and enc.ids[0][-len(suffix) :] == suffix and enc.truncated[0]
    res = rr.rerank(QUERY, ["short", "aspirin heart risk " * 40], long_documents="windows")
    long = next(r for r in res if r.index == 1)
    assert long.windows > 1 and not long.truncated and res.stats.truncated == 0


def test_both_adapters_rank_with_a_causal_reranker(causal_models: dict[str, Path]) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from langchain_crossrank import CrossRankCompressor
    from llama_index.postprocessor.crossrank import CrossRankRerank

    rr = Reranker(causal_models["qwen3"])
    expected = _direct(causal_models["qwen3"], TEMPLATES["qwen3-reranker"], QUERY, DOCS)
    order = [str(i) for i in np.argsort(expected)[::-1][:3]]
    lc: Any = CrossRankCompressor(reranker=rr, top_n=3).compress_documents(
        [Document(page_content=d, id=str(i)) for i, d in enumerate(DOCS)], QUERY
    )
    li = CrossRankRerank(reranker=rr, top_n=3).postprocess_nodes(
        [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCS)],
        query_bundle=QueryBundle(QUERY),
    )
    assert [d.id for d in lc] == [n.node.node_id for n in li] == order
    assert [d.metadata["relevance_score"] for d in lc] == pytest.approx(sorted(expected, reverse=True)[:3], abs=1e-4)
    assert [n.score for n in li] == pytest.approx(sorted(expected, reverse=True)[:3], abs=1e-4)


def test_shared_prefix_path_equals_full_prompts(causal_models: dict[str, Path]) -> None:
    """The KV-cache prefix path (off by default: slower on CPU, see benchmarks/causal_prefix.py) stays exact."""
    rr = Reranker(causal_models["qwen3"], batch_size=8)
    full = rr.score(QUERY, DOCS)
    backend: Any = rr.engine.backend
    backend.share_prefix = True
    try:
        shared = rr.score(QUERY + " today", DOCS)  # a new query: no cache involved
        backend.share_prefix = False
        assert shared == pytest.approx(rr.score(QUERY + " today", DOCS), abs=1e-4)
        assert backend.shared_tokens > 0 and full != shared
    finally:
        backend.share_prefix = False


def test_a_family_assumed_from_the_architecture_alone_is_said(
    causal_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Other rerankers share Qwen3's architecture with other prompts (e.g. ContextualAI's ctxl-rerank):
    a folder not named as the family's checkpoint is scored with the family's prompt, and a warning says so."""
    import logging
    import shutil

    from crossrank.model_files import inspect_model

    unnamed = tmp_path / "my-lm"
    shutil.copytree(causal_models["qwen3"], unnamed)
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        assert inspect_model(unnamed).template == "qwen3-reranker"
    assert "not named as a qwen3-reranker checkpoint" in caplog.text and "template='qwen3-reranker'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        inspect_model(unnamed, template="qwen3-reranker")  # confirmed: nothing to say
        inspect_model(
            shutil.copytree(unnamed, tmp_path / "hub" / "models--Qwen--Qwen3-Reranker-0.6B" / "snapshots" / "a")
        )
        inspect_model(unnamed, name="Qwen/Qwen3-Reranker-0.6B")
    assert caplog.text == ""
