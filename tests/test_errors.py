"""Every documented error: its type, and a message that says what to do."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

import crossrank
from crossrank import (
    Candidate,
    CrossrankError,
    InvalidArgumentError,
    InvalidDocumentTypeError,
    InvalidQueryError,
    InvalidQueryTypeError,
    ModelLoadError,
    ModelNotFoundError,
    Reranker,
    UnsupportedModelError,
)


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query(tiny: Reranker, query: str) -> None:
    with pytest.raises(InvalidQueryError, match="empty or whitespace"):
        tiny.rerank(query, ["a"])


@pytest.mark.parametrize("query", [None, 3, ["q"], b"bytes"])
def test_non_string_query(tiny: Reranker, query: object) -> None:
    with pytest.raises(InvalidQueryTypeError) as info:
        tiny.rerank(query, ["a"])  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError) and isinstance(info.value, CrossrankError)
    assert "query must be" in str(info.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [(None, "is None"), (42, "has type int"), (b"raw", "decode it"), (Candidate(text=None), "is None")],  # type: ignore[arg-type]
)
def test_bad_document(tiny: Reranker, doc: object, message: str) -> None:
    with pytest.raises(InvalidDocumentTypeError, match=message) as info:
        tiny.rerank("query", ["fine", doc])
    assert "candidate 1" in str(info.value)


def test_single_string_instead_of_list(tiny: Reranker) -> None:
    with pytest.raises(InvalidDocumentTypeError, match="wrap it in a list"):
        tiny.rerank("query", "just one string")


@pytest.mark.parametrize("top_n", [0, -1, 2.5, True])
def test_bad_top_n(tiny: Reranker, top_n: object) -> None:
    with pytest.raises(InvalidArgumentError, match="top_n"):
        tiny.rerank("q", ["a"], top_n=top_n)  # type: ignore[arg-type]


def test_threshold_nan(tiny: Reranker) -> None:
    with pytest.raises(InvalidArgumentError, match="threshold is NaN"):
        tiny.rerank("q", ["a"], threshold=math.nan)


@pytest.mark.parametrize("name", ["l2", "", None])
def test_unknown_normalize(tiny_model: Path, tiny: Reranker, name: object) -> None:
    if name is not None:
        with pytest.raises(InvalidArgumentError, match="normalize=.*choose one of none, sigmoid, softmax, minmax"):
            tiny.rerank("q", ["a"], normalize=name)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="normalize"):
        Reranker(tiny_model, backend="torch", normalize=name or "bogus")  # type: ignore[arg-type]


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist: pass the folder that holds config.json"):
        Reranker(tmp_path / "nope")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        Reranker(tmp_path)


def test_offline_hub_id_fails_fast() -> None:
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        Reranker("cross-encoder/definitely-not-cached-model", local_files_only=True)
    assert time.perf_counter() - t < 5
    msg = str(info.value)
    assert "local model directory" in msg and "HF_HUB_OFFLINE" in msg


def test_three_label_head_refused(tiny_model_3: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="3-label head"):
        Reranker(tiny_model_3)


def test_bi_encoder_refused(embedder_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="not a reranker"):
        Reranker(embedder_path)


def test_max_length_beyond_positions(tiny_model: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="exceeds what .* can encode \\(128 positions\\)"):
        Reranker(tiny_model, max_length=1024)


def test_unknown_backend(tiny_model: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="backend='tensorflow'"):
        Reranker(tiny_model, backend="tensorflow")


def test_torch_backend_honours_quantize(tiny_model: Path) -> None:
    """backend='torch' runs the precision asked for, or says why it cannot: never a silent other one."""
    with pytest.raises(InvalidArgumentError, match="int8.*not available on backend='torch'.*'openvino'"):
        Reranker(tiny_model, backend="torch", quantize="int8")  # at construction, before any load
    docs = ["alpha beta gamma", "delta", "beta gamma beta", "epsilon zeta"]
    fp32 = Reranker(tiny_model, backend="torch", quantize="fp32")
    bf16 = Reranker(tiny_model, backend="torch", quantize="bf16")
    auto = Reranker(tiny_model, backend="torch")
    a, b = fp32.score("beta", docs), bf16.score("beta", docs)
    auto.score("beta", docs)
    assert (fp32.backend_name, bf16.backend_name, auto.backend_name) == ("torch-fp32", "torch-bf16", "torch-fp32")
    assert a != b and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.1 * (max(a) - min(a) + 1e-6)


async def test_unknown_option_names_the_one_meant(tiny: Reranker) -> None:
    """sentence-transformers' rank() says top_k: crossrank's rerank() says top_n and tells you so."""
    from crossrank import UnknownOptionError

    with pytest.raises(UnknownOptionError, match=r"rerank\(\) got .* 'top_k'; did you mean 'top_n'\? it takes"):
        tiny.rerank("q", ["a", "b"], top_k=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="arerank.*'normalise'; did you mean 'normalize'"):
        await tiny.arerank("q", ["a"], normalise="sigmoid")  # type: ignore[call-arg]
    with pytest.raises(CrossrankError, match="'colour'; it takes dedupe"):  # nothing close: the list alone
        tiny.rerank("q", ["a"], colour=1)  # type: ignore[call-arg]


def test_a_misspelt_constructor_option_names_the_one_meant(tiny_model: Path) -> None:
    """Before: a bare TypeError from an internal class (LocalScorer.__init__), no suggestion."""
    from crossrank import UnknownOptionError

    with pytest.raises(UnknownOptionError, match=r"Reranker\(\) got .* 'max_lenght'; did you mean 'max_length'\?"):
        Reranker(tiny_model, max_lenght=256)  # type: ignore[call-arg]
    with pytest.raises(UnknownOptionError, match=r"'top_k': how many results to keep is given per call"):
        Reranker(tiny_model, top_k=3)  # type: ignore[call-arg]


def test_errors_are_one_family() -> None:
    for name in crossrank.__all__:
        obj = getattr(crossrank, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, CrossrankError), name
