"""Where the time goes: OpenVINO per-op profile of the headline workload, plus the roofline figure.

    python benchmarks/profile_ops.py --model ../shared/models/crossrank-minilm-l6-scifact \
        --dataset ../shared/data/beir-scifact [--quantize int8|bf16|fp32] [--ghz 2.6] \
        [--graph eager|sdpa] [--attention-int8] [--pad-multiple 32] [--config KEY=VALUE]

Runs 100 candidates × 200 tokens through the OpenVINO backend with PERF_COUNT on, sums the
per-node times by (op type, kernel), and compares the wall time with the int8 roofline: the work is
2 × (weight parameters) × tokens for the weight matmuls plus 4 × L² × hidden per layer and sequence
for attention; the CPU does 128 int8 ops (AVX-512 VNNI, one 512-bit VPDPBUSD per cycle) and 64 bf16
flops (VDPBF16PS) per core and cycle.

The alternatives to crossrank's own graph are there to test where attention could go faster:
``--graph sdpa`` converts the model through OpenVINO's PyTorch frontend (attention becomes its
``ScaledDotProductAttention`` op instead of the eager export's MatMul/Softmax/MatMul), quantized by
the same NNCF recipe for int8; ``--attention-int8`` quantizes the attention matmuls too (crossrank
leaves them bf16); ``--pad-multiple N`` pads each batch's length up to a multiple of N (attention
kernels can prefer aligned lengths).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--quantize", default="int8", choices=["int8", "bf16", "fp32"])
    ap.add_argument("--ghz", type=float, default=2.6, help="sustained clock for the roofline (TSC here: 2.6)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="extra OpenVINO compile property"
    )
    ap.add_argument("--graph", choices=["eager", "sdpa"], default="eager", help="eager: crossrank's own export")
    ap.add_argument("--attention-int8", action="store_true", help="int8: quantize the attention matmuls too")
    ap.add_argument("--pad-multiple", type=int, default=1, help="pad each batch's length to a multiple of N")
    args = ap.parse_args()
    if args.pad_multiple < 1:
        ap.error("--pad-multiple must be >= 1")

    import openvino as ov

    from crossrank.backends import default_threads
    from crossrank.cpuinfo import describe, effective_flags

    rr, enc, bs, batches = headline_batches(args.model, args.dataset, args.quantize)
    engine = rr.engine
    backend = engine.backend
    batches = [pad_length(b, args.pad_multiple, engine.pad_id) for b in batches]
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": default_threads(), "PERF_COUNT": True}
    cfg["INFERENCE_PRECISION_HINT"] = "f32" if backend.name.endswith("fp32") else "bf16"
    cfg.update(dict(item.split("=", 1) for item in args.config))
    graph = model_graph(args, rr, batches[0])
    label = backend.name + (
        "" if graph is None else f" ({args.graph} graph{', int8 attention' if args.attention_int8 else ''})"
    )
    compiled = ov.Core().compile_model(graph or str(backend.path), "CPU", cfg)
    req = compiled.create_infer_request()
    names = {n for p in compiled.inputs for n in p.get_names()}

    def run(collect: collections.Counter[tuple[str, str]] | None) -> float:
        t = time.perf_counter()
        for b in batches:
            req.infer({k: v for k, v in b.items() if k in names})
            if collect is not None:
                for p in req.profiling_info:
                    collect[(p.node_type, p.exec_type)] += p.real_time.total_seconds()
        return time.perf_counter() - t

    run(None)
    walls = [run(None) for _ in range(args.repeats)]
    ops: collections.Counter[tuple[str, str]] = collections.Counter()
    run(ops)
    wall = statistics.median(walls)

    info = rr.info
    cfg_json = json.loads((info.path / "config.json").read_text())
    hidden, layers, inter = cfg_json["hidden_size"], cfg_json["num_hidden_layers"], cfg_json["intermediate_size"]
    tokens = [int(np.sum(b["attention_mask"])) for b in batches]
    n_tokens = sum(tokens)
    weights = layers * (4 * hidden * hidden + 2 * hidden * inter)
    matmul_ops = 2 * weights * n_tokens
    lengths = [len(x) for x in enc.ids]
    attn_ops = sum(4 * n * n * hidden * layers for n in lengths)
    cores = default_threads()
    int8_peak = 128 * cores * args.ghz * 1e9
    bf16_peak = 64 * cores * args.ghz * 1e9
    roof = matmul_ops / int8_peak + attn_ops / bf16_peak

    total = sum(ops.values())
    shape = f"length {batches[0]['input_ids'].shape[1]}" + (
        f" (padded to ×{args.pad_multiple})" if args.pad_multiple > 1 else ""
    )
    print(f"{label}: 100 candidates × 200 tokens, {n_tokens} tokens, batch {bs}, {shape}")
    print(f"work: weight matmuls {matmul_ops / 1e9:.0f} GOP (int8) + attention {attn_ops / 1e9:.0f} GFLOP (bf16)")
    print(describe())
    print(
        f"roofline at {args.ghz} GHz × {cores} cores: {roof * 1000:.0f} ms · measured {wall * 1000:.0f} ms "
        f"(median of {args.repeats}) → {roof / wall:.0%} of roofline"
    )
    if "amx_int8" in effective_flags():
        print("(VNNI rates; AMX tiles do more: `crossrank bench --roofline` measures this CPU's floor)")
    print()
    print("| op (kernel) | ms | share |\n|---|---:|---:|")
    groups: collections.Counter[str] = collections.Counter()
    for (node, kernel), sec in ops.items():
        groups[f"{node} ({kernel})"] += sec
    for name, sec in groups.most_common(12):
        print(f"| {name} | {sec * 1000:.0f} | {sec / total:.0%} |")
    return 0


def headline_batches(model: str, dataset: str, quantize: str) -> tuple[Any, Any, int, list[dict[str, np.ndarray]]]:
    """The headline workload, 100 SciFact passages × 200 tokens, as crossrank's OpenVINO engine batches it.

    Returns the loaded ``Reranker``, the encoded pairs, the backend's batch size and the padded
    batches in length order (the engine's order), so every profiling script times the same inputs.
    """
    from crossrank import Reranker
    from crossrank.cli.bench import passages
    from crossrank.scoring.pairs import pad_batch

    docs = passages(model, Path(dataset) / "corpus.jsonl", 200, 100)
    query = "Vitamin D deficiency is associated with a higher risk of cancer"
    rr = Reranker(model, backend="openvino", quantize=quantize)
    rr.score(query, docs[:2])
    engine = rr.engine
    if rr.max_length is None:
        raise SystemExit("profiling needs a local model with a max_length")
    enc = engine.encoder(rr.max_length).encode(query, docs)
    order = sorted(range(len(enc.ids)), key=lambda i: len(enc.ids[i]))
    bs = engine.backend.preferred_batch_size  # type: ignore[attr-defined]
    chunks = [order[s : s + bs] for s in range(0, len(order), bs)]
    batches = [pad_batch([enc.ids[i] for i in c], [enc.types[i] for i in c], pad_id=engine.pad_id) for c in chunks]
    return rr, enc, bs, batches


def pad_length(batch: dict[str, np.ndarray], multiple: int, pad_id: int) -> dict[str, np.ndarray]:
    """``batch`` with its length padded up to a multiple of ``multiple`` (pad tokens, mask 0)."""
    n, length = batch["input_ids"].shape
    extra = -length % multiple
    if not extra:
        return batch
    return {
        k: np.concatenate([v, np.full((n, extra), pad_id if k == "input_ids" else 0, dtype=v.dtype)], axis=1)
        for k, v in batch.items()
    }


def model_graph(args: argparse.Namespace, rr: Any, example: dict[str, np.ndarray]) -> Any | None:
    """The OpenVINO model to profile when it is not crossrank's own cached file (None: the cached file)."""
    if args.graph == "eager" and not args.attention_int8:
        return None
    import openvino as ov

    from crossrank.backends.export import ensure_model_file

    if args.graph == "sdpa":
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(rr.info.path), attn_implementation="sdpa")
        feed = {
            k: torch.from_numpy(v) for k, v in example.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.no_grad():
            graph = ov.convert_model(model.eval(), example_input=feed)
    else:
        graph = ov.Core().read_model(str(ensure_model_file(rr.info, "fp32")))
    if args.quantize != "int8":
        return graph
    import nncf

    from crossrank.backends.model_inputs import port_names
    from crossrank.backends.ov_quantize import _attention_matmuls, calibration_batches

    ignored = None
    if not args.attention_int8:  # crossrank's recipe: attention matmuls left in bf16
        ignored = nncf.IgnoredScope(
            names=_attention_matmuls(graph), types=["ScaledDotProductAttention"], validate=False
        )
    return nncf.quantize(
        graph,
        nncf.Dataset(calibration_batches(rr.info, port_names(graph.inputs))),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=10_000,
        ignored_scope=ignored,
    )


if __name__ == "__main__":
    sys.exit(main())
