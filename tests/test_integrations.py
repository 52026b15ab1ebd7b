"""The shared adapter layer: both frameworks' adapters score and filter identically through one core."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from crossrank import Reranker
from crossrank.inputs import NORMALIZE_CHOICES
from langchain_crossrank import CrossRankCompressor
from llama_index.postprocessor.crossrank import CrossRankRerank

TEXTS = [
    "the python snake is a reptile",
    "python code is a program language",
    "aspirin dose and heart risk",
    "coffee and sleep in patients",
    "vitamin study of blood sugar",
    "red fire and blue water",
]
QUERY = "python snake"


@pytest.mark.parametrize("normalize", NORMALIZE_CHOICES)
async def test_adapters_agree_with_a_shared_reranker(tiny: Reranker, normalize: str) -> None:
    """A shared Reranker keeps its own scale; each adapter's ``normalize`` and ``threshold`` still apply."""
    assert tiny.normalize == "none"
    expected_all = tiny.rerank(QUERY, TEXTS, normalize=normalize)
    threshold = expected_all[len(TEXTS) // 2].score  # keeps the top half (ties aside)
    expected = tiny.rerank(QUERY, TEXTS, normalize=normalize, threshold=threshold, top_n=4)
    assert 0 < len(expected) < len(TEXTS)

    lc = CrossRankCompressor(reranker=tiny, normalize=normalize, threshold=threshold, top_n=4)
    li = CrossRankRerank(reranker=tiny, normalize=normalize, threshold=threshold, top_n=4)
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(TEXTS)]
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]

    for lc_out, li_out in (
        (lc.compress_documents(docs, QUERY), li.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))),
        (
            await lc.acompress_documents(docs, QUERY),
            await li.apostprocess_nodes(nodes, query_bundle=QueryBundle(QUERY)),
        ),
    ):
        lc_pairs = [(d.id, d.metadata["relevance_score"]) for d in lc_out]
        li_pairs = [(n.node.node_id, n.score) for n in li_out]
        assert [i for i, _ in lc_pairs] == [i for i, _ in li_pairs] == [str(r.index) for r in expected]
        assert [s for _, s in lc_pairs] == pytest.approx(expected.scores, abs=1e-6)
        assert [s for _, s in li_pairs] == pytest.approx(expected.scores, abs=1e-6)
        assert all(type(s) is float for _, s in lc_pairs + li_pairs)
