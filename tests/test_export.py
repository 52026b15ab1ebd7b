"""``crossrank export``: portable model folders, loaded without building anything (issue #27).

The references come from outside the folder: sentence-transformers' ``CrossEncoder.predict`` on the
source model (fp32), and the full install's own cache builds of the same model (the int8 graphs must
be those very files, so scores are identical). The torch-free install itself is proved in CI by
``tests/light/`` in a venv without torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.backends import export, portable
from crossrank.backends.onnx_backend import int8_model_variant
from crossrank.backends.openvino_backend import int8_model_variant as ov_int8_variant
from crossrank.backends.openvino_backend import openvino_installed
from crossrank.cli import main
from crossrank.errors import InvalidArgumentError, ModelLoadError, NotExportedError, UnsupportedModelError
from crossrank.exported import MANIFEST, VARIANT_FILES
from crossrank.model_files import inspect_model
from crossrank.scoring.engine import clear_engines

QUERY = "python snake"
DOCS = ["the python snake is a reptile", "python code is a program language", "aspirin dose and heart risk", "snakes"]
VARIANTS = ("fp32", "int8", "int8-7bit", "ov-int8") if openvino_installed() else ("fp32", "int8", "int8-7bit")


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-export"
    portable.export_model(tiny_model, out, variants=VARIANTS, progress=False)
    return out


def _forbid_builds(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """An empty model cache from here on, and any attempt to build a model file fails the test."""
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(cache))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("an exported folder must never be built on")

    monkeypatch.setattr(export, "_build", no_build)
    clear_engines()
    return cache


@pytest.fixture()
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield _forbid_builds(monkeypatch, tmp_path / "cache")
    clear_engines()


def test_manifest_records_source_recipe_and_files(exported: Path, tiny_model: Path) -> None:
    import hashlib

    from crossrank import __version__

    m = json.loads((exported / MANIFEST).read_text())
    source = inspect_model(tiny_model)
    assert m["format"] == 1 and m["family"] == "cross-encoder" and m["crossrank_version"] == __version__
    assert m["source"]["fingerprint"] == source.fingerprint
    assert (
        m["source"]["files_sha256"]["model.safetensors"]
        == hashlib.sha256((tiny_model / "model.safetensors").read_bytes()).hexdigest()
    )
    assert m["head"]["num_labels"] == 1 and m["max_length"] == source.default_max_length
    assert m["inputs"][0] == "input_ids"
    assert set(m["variants"]) == set(VARIANTS)
    if "ov-int8" in VARIANTS:
        assert m["calibration"]["openvino-int8"]["pairs"] == 128
    for v in VARIANTS:
        for rel, meta in m["variants"][v]["files"].items():
            assert hashlib.sha256((exported / rel).read_bytes()).hexdigest() == meta["sha256"]
    # Tokenizer and config beside the graphs; no weights.
    assert (exported / "tokenizer.json").is_file() and (exported / "config.json").is_file()
    assert not list(exported.glob("*.safetensors"))


def test_graphs_are_the_full_installs_own_builds(exported: Path, tiny_model: Path) -> None:
    """The exported files are byte for byte what the full install builds into its cache for the source."""
    info = inspect_model(tiny_model)
    for v in VARIANTS:
        cached = export.ensure_model_file(info, v)
        assert cached.read_bytes() == (exported / VARIANT_FILES[v]).read_bytes(), v


def test_scores_match_sentence_transformers_and_the_source(
    exported: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(tiny_model), device="cpu").predict([(QUERY, d) for d in DOCS])
    clear_engines()
    source_int8 = Reranker(tiny_model, backend="onnx", quantize="int8").score(QUERY, DOCS)  # the full install's path
    cache = _forbid_builds(monkeypatch, tmp_path / "cache")
    try:
        fp32 = Reranker(exported, backend="onnx", quantize="fp32").score(QUERY, DOCS)
        int8 = Reranker(exported, backend="onnx", quantize="int8").score(QUERY, DOCS)
    finally:
        clear_engines()
    assert fp32 == pytest.approx([float(x) for x in reference], abs=1e-4)
    assert all(type(s) is float for s in fp32)
    assert int8 == source_int8, "int8 scores from the folder are identical to the full install's"
    assert not cache.exists() or not list(cache.glob("onnx/*")), "loading an exported folder built nothing"


@pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")
def test_openvino_paths_from_the_folder(exported: Path, fresh_cache: Path) -> None:
    fp32 = Reranker(exported, backend="onnx", quantize="fp32").score(QUERY, DOCS)
    ov32 = Reranker(exported, backend="openvino", quantize="fp32")
    assert ov32.score(QUERY, DOCS) == pytest.approx(fp32, abs=1e-4) and ov32.backend_name == "openvino-fp32"
    if ov_int8_variant() in VARIANTS:
        rr = Reranker(exported, backend="openvino", quantize="int8")
        rr.score(QUERY, DOCS)
        assert rr.backend_name == "openvino-int8" and rr.engine.backend.path.parent.name == ov_int8_variant()  # type: ignore[attr-defined]
    assert not (fresh_cache / "onnx").exists()


def test_auto_tunes_among_what_the_folder_holds(exported: Path, fresh_cache: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CROSSRANK_TUNE", "1")
    rr = Reranker(exported)
    rr.score(QUERY, DOCS)
    decision = rr.engine.backend.tuned  # type: ignore[attr-defined]
    held = {int8_model_variant(): ("onnx", "int8"), "fp32": ("onnx", "fp32")}
    ran = {(t.backend, t.quantize) for t in decision.trials if t.ms is not None}
    assert ("onnx", "fp32") in ran and ("onnx", "int8") in ran
    assert all(b != "torch" for b, _ in ran) and set(held) <= set(VARIANTS)
    assert not (fresh_cache / "onnx").exists(), "tuning an exported folder built nothing"
    clear_engines()  # a second start reads the cached decision
    assert Reranker(exported).score(QUERY, DOCS) is not None


def test_missing_variant_is_a_clear_error_at_construction(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = tmp_path / "fp32-only"
    portable.export_model(tiny_model, only, variants=["fp32"], progress=False)
    _forbid_builds(monkeypatch, tmp_path / "cache")
    with pytest.raises(NotExportedError, match=r"without the int8.*holds: fp32") as err:
        Reranker(only, backend="onnx", quantize="int8")
    assert "--variants fp32,int8" in str(err.value)
    with pytest.raises(NotExportedError, match="no torch"):
        Reranker(only, backend="torch")
    with pytest.raises(NotExportedError, match="device='cuda'"):
        Reranker(only, device="cuda")
    # auto, tuning off, runs a path of what is there (the fp32 graph) without a warning about what is not.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rr = Reranker(only)
        rr.score(QUERY, DOCS)
    assert rr.backend_name in ("openvino-bf16", "openvino-fp32", "onnx-fp32")


def test_a_damaged_graph_is_refused(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "damaged"
    portable.export_model(tiny_model, out, variants=["fp32"], progress=False)
    _forbid_builds(monkeypatch, tmp_path / "cache")
    graph = out / VARIANT_FILES["fp32"]
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="missing or damaged"):
        Reranker(out, backend="onnx", quantize="fp32").score(QUERY, DOCS)


def test_causal_lm_rerankers_are_not_exportable(tmp_path: Path) -> None:
    from crossrank.testing_causal import make_tiny_causal_reranker

    model = make_tiny_causal_reranker(tmp_path / "qwen3", family="qwen3")
    with pytest.raises(UnsupportedModelError, match="not exportable"):
        portable.export_model(model, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_exported_folder_is_no_causal_reranker(exported: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="not exportable"):
        Reranker(exported, template="qwen3-reranker")


def test_cli_export_json_and_refusals(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-export"
    assert main(["export", str(tiny_model), "--out", str(out), "--variants", "fp32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variants"]["fp32"]["file"] == "fp32/model.onnx" and report["manifest"]["format"] == 1
    assert main(["export", str(tiny_model), "--out", str(out), "--variants", "fp32"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export", str(tiny_model), "--out", str(out), "--variants", "int8", "--force"]) == 0
    assert set(json.loads((out / MANIFEST).read_text())["variants"]) == {"int8"}
    assert main(["export", str(out), "--out", str(tmp_path / "again")]) == 2  # an export is not a source
    assert "already an exported folder" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="choose from"):
        portable.parse_variants("fp16")


def test_scoring_an_exported_folder_imports_no_torch(exported: Path) -> None:
    """What the light install runs, in a fresh process of this one: no torch, transformers or s-t import."""
    code = (
        "import sys; from crossrank import Reranker; "
        f"rr = Reranker({str(exported)!r}); rr.score('python snake', ['a snake', 'code']); "
        "print(rr.backend_name, *(m in sys.modules for m in ('torch', 'transformers', 'sentence_transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, *loaded = out.stdout.split()
    assert loaded == ["False", "False", "False"], out.stdout
    assert name.startswith(("onnx-", "openvino-"))
