"""The one distribution ships three import packages, typed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize("name", ["crossrank", "langchain_crossrank", "llama_index.postprocessor.crossrank"])
def test_importable_and_typed(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__file__ is not None
    assert (Path(mod.__file__).parent / "py.typed").is_file()


def test_llama_index_namespace_is_shared() -> None:
    import llama_index.core

    import llama_index

    # PEP 420: our package sits beside llama-index-core's under one namespace.
    assert not hasattr(llama_index, "__file__") or llama_index.__file__ is None
    assert llama_index.core is not None


def test_core_import_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, crossrank; print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
