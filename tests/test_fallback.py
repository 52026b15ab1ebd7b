"""``backend="auto"`` never crashes on a supported model: it falls back, warns once, and remembers."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from crossrank import ExportError, Reranker, clear_engines
from crossrank.scoring import auto


def _break(monkeypatch: pytest.MonkeyPatch, module: str, cls: str, calls: list[str]) -> None:
    import importlib

    mod = importlib.import_module(module)

    def broken(self: object, *args: object, **kwargs: object) -> None:
        calls.append(cls)
        raise ExportError(f"simulated {cls} export failure: index out of range")

    monkeypatch.setattr(getattr(mod, cls), "__init__", broken)


@pytest.fixture
def fresh_model(tmp_path: Path) -> Path:
    from crossrank.testing import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path / "m", seed=11)


def test_auto_falls_back_warns_once_and_remembers(fresh_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _break(monkeypatch, "crossrank.backends.openvino_backend", "OpenVinoBackend", calls)
    _break(monkeypatch, "crossrank.backends.onnx_backend", "OnnxBackend", calls)
    reference = Reranker(fresh_model, backend="torch").score("heart risk", ["aspirin dose", "red fire"])
    clear_engines()
    rr = Reranker(fresh_model)  # auto
    with pytest.warns(RuntimeWarning, match="simulated") as caught:
        scores = rr.score("heart risk", ["aspirin dose", "red fire"])
    assert len(caught) == 1 and "Running torch" in str(caught[0].message)
    assert rr.backend_name.startswith("torch") and scores == pytest.approx(reference, abs=1e-5)
    assert auto.remembered(rr.info, "auto") == ("torch", "fp32")
    # The next start goes straight to what worked: no export attempt, no warning.
    clear_engines()
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Reranker(fresh_model).score("heart risk", ["aspirin dose", "red fire"])
    assert calls == [] and again == pytest.approx(reference, abs=1e-5)
    clear_engines()


def test_explicit_backend_that_cannot_work_says_what_to_use(fresh_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _break(monkeypatch, "crossrank.backends.onnx_backend", "OnnxBackend", [])
    with pytest.raises(ExportError, match="backend='auto'.*backend='torch'") as err:
        Reranker(fresh_model, backend="onnx", quantize="int8").score("q", ["d"])
    assert "bert" in str(err.value)  # names the model family
    clear_engines()


def test_chain_order() -> None:
    from crossrank.backends.openvino_backend import cpu_has_bf16, openvino_installed

    order = auto.chain("openvino", "auto")
    if openvino_installed():
        expected = [("openvino", "auto"), ("openvino", "int8")]
        expected += [("openvino", "bf16")] if cpu_has_bf16() else []
        assert order[: len(expected)] == expected
    assert order[-2:] == [("onnx", "int8"), ("torch", "fp32")]
    assert auto.chain("onnx", "auto") == [("onnx", "int8"), ("torch", "fp32")]
    assert auto.chain("onnx", "fp32") == [("onnx", "fp32"), ("torch", "fp32")]
