"""``crossrank score-pairs`` in one process: JSONL and Parquet in and out, in batches, same scores as the core."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.cli import main
from crossrank.errors import DatasetError, InvalidArgumentError
from crossrank.server.pairs import PairWriter, iter_batches, score_pairs_file

ROWS = [{"query": f"q{i % 4} aspirin heart", "document": f"passage {i} on aspirin", "id": i} for i in range(50)]


def _write_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_jsonl_to_jsonl_matches_score_pairs(tiny: Reranker, tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl")
    seen: list[int] = []
    n = score_pairs_file(tiny, src, tmp_path / "out.jsonl", batch_rows=7, progress=seen.append)
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert n == 50 and sum(seen) == 50 and max(seen) == 7
    assert [r["id"] for r in out] == list(range(50))
    want = tiny.score_pairs([(r["query"], r["document"]) for r in ROWS])
    assert [r["score"] for r in out] == pytest.approx(want, abs=1e-6)


def test_parquet_roundtrip_via_cli(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), src)
    args = ["--model", str(tiny_model), "--backend", "torch", "--batch-rows", "16", "--no-progress"]
    assert main(["score-pairs", str(src), str(tmp_path / "out.parquet"), *args]) == 0
    assert main(["score-pairs", str(src), str(tmp_path / "out.jsonl"), *args]) == 0
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in table] == list(range(50))
    assert [r["score"] for r in table] == pytest.approx([r["score"] for r in lines], abs=1e-6)
    assert "scored 50 pairs" in capsys.readouterr().err


def test_bad_inputs_name_the_problem(tiny: Reranker, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"q": "x", "document": "y"}) + "\n")
    with pytest.raises(DatasetError, match="query-field"):
        score_pairs_file(tiny, bad, tmp_path / "o.jsonl")
    bad.write_text(json.dumps({"query": 1, "document": "y"}) + "\n")
    with pytest.raises(DatasetError, match="row 0"):
        score_pairs_file(tiny, bad, tmp_path / "o.jsonl")
    with pytest.raises(InvalidArgumentError, match="parquet or .jsonl"):
        score_pairs_file(tiny, bad, tmp_path / "o.csv")
    with pytest.raises(DatasetError, match="does not exist"):
        list(iter_batches(tmp_path / "missing.jsonl", 10))
    assert main(["score-pairs", str(bad), str(bad), "--no-progress"]) == 2
    with PairWriter(tmp_path / "empty.jsonl") as w:
        assert w.rows == 0
