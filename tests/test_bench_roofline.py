"""``crossrank bench --roofline``: the matmul-only floor is sized from the model and really runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.errors import InvalidArgumentError

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def test_floor_is_sized_from_the_model_and_runs_every_native_precision(tiny_model: Path) -> None:
    from crossrank.backends.openvino_backend import cpu_has_bf16
    from crossrank.cli.bench_roofline import matmul_floor, matmul_flops, model_sizes, roofline_table

    cfg = json.loads((tiny_model / "config.json").read_text())
    sizes = model_sizes(tiny_model)
    assert sizes == {
        "hidden": cfg["hidden_size"],
        "intermediate": cfg["intermediate_size"],
        "layers": cfg["num_hidden_layers"],
    }
    # MiniLM-L6's shapes: 6 layers × (4 × 384² + 2 × 384 × 1536) multiply-adds per token.
    assert matmul_flops({"hidden": 384, "intermediate": 1536, "layers": 6}, 1) == 2 * 6 * (4 * 384**2 + 2 * 384 * 1536)
    floor = matmul_floor(tiny_model, candidates=5, tokens=16, batch_size=2, repeats=1)
    assert set(floor) == ({"int8", "bf16", "fp32"} if cpu_has_bf16() else {"int8", "fp32"})
    assert all(v["ms"] > 0 and v["gflops"] > 0 for v in floor.values())
    best = min(v["ms"] for v in floor.values())
    text = roofline_table(floor, {"auto": best * 4}, "5 × 16")
    assert "| auto |" in text and "0.25" in text


def test_floor_needs_a_local_encoder_config(tmp_path: Path) -> None:
    from crossrank.cli.bench_roofline import model_sizes

    with pytest.raises(InvalidArgumentError, match="config.json"):
        model_sizes(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(InvalidArgumentError, match="intermediate_size"):
        model_sizes(tmp_path)


def test_workloads_option_parses_and_refuses_nonsense() -> None:
    from crossrank.cli.bench import parse_workloads

    assert parse_workloads("100x200, 20X200") == [(100, 200), (20, 200)]
    for bad in ("100", "x200", "0x200", "100x-1", "ax b"):
        with pytest.raises(InvalidArgumentError, match="CANDIDATESxTOKENS"):
            parse_workloads(bad)
