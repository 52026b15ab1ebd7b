"""``crossrank eval --plot`` and ``crossrank bench --plot``: real runs on tiny inputs write real figures.

The files are checked as what a viewer needs: a PNG by its signature and header (size > 0), an SVG
as well-formed XML whose root is ``<svg>`` and that carries the figure's labels. A bad suffix or a
missing folder is a one-line error, exit 2, before any work is done.
"""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import write_beir_slice

from crossrank.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (raises if the file is not a PNG)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def svg_text(path: Path) -> str:
    """All text in an SVG that parses as XML with an ``<svg>`` root."""
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag
    return " ".join(t for el in root.iter() for t in (el.text or "",) if t.strip())


@pytest.fixture(scope="module")
def tiny_beir(scifact, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """4 SciFact claims over their abstracts and 40 others: eval and bench end to end in seconds."""
    return write_beir_slice(scifact, tmp_path_factory.mktemp("plot-beir"), queries=4, extra_docs=40)


@pytest.mark.integration
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_eval_plot_writes_the_depth_curve(
    capsys: pytest.CaptureFixture[str], tiny_beir: Path, shared_model: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"depth{suffix}"
    argv = ["eval", str(tiny_beir), "--model", str(shared_model), "--first-stage", "bm25", "--fusion", "none,rrf"]
    code = main([*argv, "--candidates", "5,10", "--max-length", "128", "--json", "--plot", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(stdout)["candidates"] == [5, 10], "--json stays machine-readable with --plot"
    assert f"plot written to {out}" in err
    if suffix == ".png":
        width, height = png_size(out)
        assert width > 400 and height > 300
    else:
        text = svg_text(out)
        for label in ("nDCG@10", "rerank depth", "bm25 alone", "bm25 + rrf (reranked)", "ms/query"):
            assert label in text, f"{label!r} missing from the SVG"


@pytest.mark.integration
def test_bench_plot_writes_ms_per_method(
    capsys: pytest.CaptureFixture[str], tiny_beir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """One real bench run (it times subprocess cold starts: slow-ish); the PNG path is drawn below."""
    out = tmp_path / "bench.svg"
    argv = ["bench", "--model", str(tiny_model), "--dataset", str(tiny_beir), "--methods", "st,onnx-fp32"]
    argv += ["--workloads", "8x16,4x16", "--repeats", "1", "--fidelity-queries", "2", "--plot", str(out)]
    code = main(argv)
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "| 8 × 16 | onnx-fp32 |" in stdout and f"plot written to {out}" in err
    text = svg_text(out)
    for label in ("st", "onnx-fp32", "8 candidates × 16 tokens", "4 candidates × 16 tokens", "CPU:"):
        assert label in text, f"{label!r} missing from the SVG"


def test_bench_plot_draws_the_roofline(tmp_path: Path) -> None:
    """The floor of ``--roofline`` is drawn over the headline workload, labelled with its precision."""
    from crossrank.cli.plots import plot_bench

    rows = [
        {"candidates": 100, "tokens": 200, "method": m, "ms_per_query": ms, "pairs_per_s": 1e5 / ms, "speedup_vs_a": a}
        for m, ms, a in (("st", 2400.0, 1.0), ("auto", 600.0, 4.0))
    ]
    floor = {"int8": {"ms": 150.0, "gflops": 3000.0}, "fp32": {"ms": 900.0, "gflops": 500.0}}
    out = plot_bench({"rows": rows, "cpu": "test CPU [avx2]", "roofline": floor}, tmp_path / "roof.svg")
    text = svg_text(out)
    assert "int8 matmul floor 150 ms" in text and "test CPU [avx2]" in text
    plot_bench({"rows": rows, "cpu": "test CPU"}, tmp_path / "no-roof.svg")
    assert "matmul floor" not in svg_text(tmp_path / "no-roof.svg")
    assert png_size(plot_bench({"rows": rows, "cpu": "test CPU", "roofline": floor}, tmp_path / "roof.png"))[0] > 400


@pytest.mark.parametrize("command", ["eval", "bench"])
@pytest.mark.parametrize("plot", ["figure.pdf", "figure", "no-such-folder/figure.png"])
def test_bad_plot_path_is_a_clean_error_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, plot: str
) -> None:
    """The dataset does not exist either: the plot path is checked first, so the error names it."""
    missing = str(tmp_path / "no-dataset")
    argv = ["eval", missing, "--model", "x"] if command == "eval" else ["bench", "--dataset", missing, "--model", "x"]
    code = main([*argv, "--plot", str(tmp_path / plot)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("crossrank: error: --plot") and len(err.strip().splitlines()) == 1
    assert (".png or .svg" in err) if "folder" not in plot else ("does not exist" in err)
    assert not list(tmp_path.glob("figure*"))
