"""``crossrank bench`` peer methods: each one ranks like crossrank, or its row says why it cannot run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from crossrank import Reranker
from crossrank.cli import bench, bench_peers, main
from crossrank.cli.bench_peers import PEER_METHODS, PEERS, peer_scorer, unavailable_reason

QUERY = "does vitamin d deficiency raise cancer risk"
DOCS = [
    "the cat sat on the mat",
    "vitamin d deficiency and cancer risk",
    "a study of cancer in mice",
    "random words about finance and banks",
    "the weather is nice today",
    "cancer risk grows with age",
    "vitamin supplements",
    "deficiency of iron in blood",
    "hello world",
    "quantum physics lecture notes",
    "sunlight makes vitamin d in skin",
    "football match results",
]


def _ranks(x: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(-np.asarray(x, dtype=np.float64)))


def _spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


@pytest.mark.parametrize("method", PEER_METHODS)
def test_peer_ranks_like_crossrank_onnx_fp32_or_says_why(method: str, tiny_model: Path) -> None:
    reason = unavailable_reason(method)
    if reason is not None:
        # The row the bench prints instead of numbers; then skip, as the peer's package is absent.
        assert reason.startswith(("not installable: ", "not installed: ")) and len(reason) > 20
        if PEERS[method].conflict:
            assert PEERS[method].conflict in reason
        rendered = bench.table([], {}, {}, {method: reason})
        assert f"| {method} | {bench._cell(reason)} |" in rendered
        assert f"| all | {method} | {bench._cell(reason)} |" in rendered
        pytest.skip(f"{method}: {reason}")
    ref = Reranker(tiny_model, backend="onnx", quantize="fp32").score(QUERY, DOCS)
    scores = peer_scorer(method, str(tiny_model))(QUERY, DOCS)
    assert len(scores) == len(DOCS) and all(np.isfinite(scores))
    assert _spearman(scores, ref) >= 0.9, (scores, ref)
    assert set(np.argsort(scores)[-3:]) & set(np.argsort(ref)[-3:]), "the top 3 share nothing"
    if not method.endswith("-int8") and method.startswith("st-"):  # fp32 exports: same numbers
        assert scores == pytest.approx(ref, abs=1e-3)


def test_flashrank_folder_loads_offline(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flashrank = pytest.importorskip("flashrank")

    def no_download(self: object, model_name: str) -> None:
        raise AssertionError(f"FlashRank tried to download {model_name}")

    monkeypatch.setattr(flashrank.Ranker, "_download_model_files", no_download)
    cache_dir, name, onnx_name, max_length = bench_peers.flashrank_folder(tiny_model)
    folder = cache_dir / name
    for f in (onnx_name, "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (folder / f).is_file(), f
    assert max_length == 128
    # Scores come back in input order, not FlashRank's sorted order.
    fn = peer_scorer("flashrank", str(tiny_model))
    scores = fn(QUERY, DOCS)
    assert fn(QUERY, DOCS[::-1]) == pytest.approx(scores[::-1], abs=1e-6)


def _tiny_beir(root: Path) -> Path:
    root.mkdir()
    with (root / "corpus.jsonl").open("w") as f:
        for i, d in enumerate(DOCS):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": d}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        f.write(json.dumps({"_id": "q1", "text": QUERY}) + "\n")
        f.write(json.dumps({"_id": "q2", "text": "football results"}) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td11\t1\n")
    return root


def test_bench_keeps_rows_of_peers_that_cannot_run(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One missing peer and one failing peer do not stop the run; both rows say why, the rest has numbers."""
    real = bench_peers.unavailable_reason
    forced = {"st-onnx": "not installable: test conflict", "st-openvino": None}  # None: present, then fails
    monkeypatch.setattr(bench_peers, "unavailable_reason", lambda m: forced[m] if m in forced else real(m))
    real_scorer = bench.peer_scorer

    def failing(method: str, model: str, calibration: Callable[[], list[str]] | None = None) -> bench_peers.Scorer:
        if method == "st-openvino":
            raise RuntimeError("boom\nsecond line")
        return real_scorer(method, model, calibration)

    monkeypatch.setattr(bench, "peer_scorer", failing)
    methods = ["onnx-fp32", "st-onnx", "st-openvino"]
    if real("flashrank") is None:
        methods.append("flashrank")
    dataset = _tiny_beir(tmp_path / "beir")
    argv = ["bench", "--model", str(tiny_model), "--dataset", str(dataset), "--quick", "--repeats", "1"]
    assert main([*argv, "--methods", ",".join(methods), "--fidelity-queries", "2"]) == 0
    out = capsys.readouterr().out
    assert "| all | st-onnx | not installable: test conflict | — | — |" in out
    assert "| st-onnx | not installable: test conflict | — | — | — |" in out
    assert "| st-openvino | failed: RuntimeError: boom | — | — | — |" in out
    assert "| 100 × 200 | onnx-fp32 |" in out
    if "flashrank" in methods:
        assert "| 100 × 200 | flashrank |" in out
        row = next(line for line in out.splitlines() if line.startswith("| flashrank |"))
        overlap = float(row.split("|")[4])
        assert overlap >= 0.9, row


def test_peers_flag_appends_every_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, tuple[str, ...]] = {}

    def fake(model: str, dataset: Path, *, methods: tuple[str, ...], **kw: object) -> dict[str, object]:
        seen["methods"] = methods
        return {"table": ""}

    monkeypatch.setattr(bench, "benchmark", fake)
    monkeypatch.setenv("CROSSRANK_MODEL", "/nonexistent")
    # The run's up-front checks of the dataset and model are tested in test_cli; here only the methods matter.
    monkeypatch.setattr("crossrank.retrieval.beir.beir_files", lambda *a, **k: [])
    monkeypatch.setattr("crossrank.model_files.resolve_model_dir", lambda *a, **k: Path("/nonexistent"))
    assert main(["bench", "--dataset", "x", "--methods", "st,flashrank", "--peers"]) == 0
    assert seen["methods"] == ("st", "flashrank", *(m for m in PEER_METHODS if m != "flashrank"))
    assert set(bench.METHODS).isdisjoint(PEER_METHODS)
