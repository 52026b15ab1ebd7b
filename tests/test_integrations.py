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


def test_a_shared_rerankers_scale_is_the_adapters_default(tiny_model) -> None:  # type: ignore[no-untyped-def]
    """``Reranker(normalize="sigmoid")`` shared with an adapter: the adapter reports (and thresholds on)
    that scale unless it names another, like the LangChain ``CrossEncoder`` entry point does."""
    from langchain_crossrank import CrossRankCrossEncoder

    rs = Reranker(tiny_model, backend="torch", normalize="sigmoid")
    expected = rs.rerank(QUERY, TEXTS)
    assert all(0 < s < 1 for s in expected.scores)
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(TEXTS)]
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]
    lc = CrossRankCompressor(reranker=rs, top_n=None)
    li = CrossRankRerank(reranker=rs, top_n=None)
    assert lc.normalize == li.normalize == "sigmoid"
    assert [d.metadata["relevance_score"] for d in lc.compress_documents(docs, QUERY)] == pytest.approx(
        expected.scores, abs=1e-6
    )
    assert [n.score for n in li.postprocess_nodes(nodes, query_str=QUERY)] == pytest.approx(expected.scores, abs=1e-6)
    assert sorted(CrossRankCrossEncoder(reranker=rs).score([(QUERY, t) for t in TEXTS]), reverse=True) == (
        pytest.approx(expected.scores, abs=1e-6)
    )
    raw = CrossRankRerank(reranker=rs, normalize="none", top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.score for n in raw] == pytest.approx(rs.rerank(QUERY, TEXTS, normalize="none").scores, abs=1e-6)


@pytest.mark.parametrize("adapter", [CrossRankCompressor, CrossRankRerank])
def test_options_that_would_be_ignored_are_refused(tiny: Reranker, adapter: type) -> None:
    """Beside ``reranker=``, a different ``model`` or any ``reranker_kwargs`` would be silently unused;
    a misspelt option likewise. All are errors naming what to do."""
    from pydantic import ValidationError

    from crossrank import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="reranker= scores with"):
        adapter(reranker=tiny, model="some/other-model")
    with pytest.raises(InvalidArgumentError, match="set those options on that Reranker"):
        adapter(reranker=tiny, reranker_kwargs={"max_length": 8})
    with pytest.raises(InvalidArgumentError, match="normalize= to the adapter itself"):
        adapter(model=tiny.model_name, reranker_kwargs={"normalize": "sigmoid"})
    with pytest.raises(ValidationError, match="topn"):
        adapter(reranker=tiny, topn=1)
    assert adapter(reranker=tiny, model=tiny.model_name).model == tiny.model_name  # the same model: fine


def test_an_adapter_saved_with_a_cascade_says_how_to_restore_it(tiny: Reranker) -> None:
    """LlamaIndex's to_dict keeps the cascade's name ("a > b"), which names no model: from_dict says what to do."""
    from crossrank import Cascade, InvalidArgumentError

    saved = CrossRankRerank(reranker=Cascade([(tiny, None), (tiny, 3)]), top_n=2).to_dict()
    assert " > " in saved["model"]
    with pytest.raises(InvalidArgumentError, match=r"pass reranker=Cascade"):
        CrossRankRerank.from_dict(saved)
    plain = CrossRankRerank.from_dict(CrossRankRerank(reranker=tiny, top_n=2).to_dict())  # a plain one reloads
    assert plain.model == tiny.model_name and plain.top_n == 2
