"""Does running the shared prompt prefix once pay for causal-LM rerankers? (issue #13)

Scores 100 candidates × 200 tokens behind an 80-token shared head (system text + instruction +
query, the shape of a Qwen3-Reranker prompt) and a 12-token suffix, with a random Qwen3 model of
reranker-like proportions, two ways side by side: every prompt in full (left-padded batches) and
with the prefix shared through the KV cache (``CausalTorchBackend(share_prefix=True)``). Prints
medians, the ratio and the largest score difference, with the CPU it ran on.

    python benchmarks/causal_prefix.py [--layers 4] [--hidden 512] [--repeats 3] [--batch-sizes 8,16,32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def build(path: Path, hidden: int, layers: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from crossrank.testing_causal import make_tiny_causal_reranker

    make_tiny_causal_reranker(path, "qwen3")  # tokenizer and template files
    cfg = AutoConfig.from_pretrained(path)
    cfg.update(
        {
            "hidden_size": hidden,
            "intermediate_size": hidden * 3,
            "num_hidden_layers": layers,
            "num_attention_heads": hidden // 64,
            "num_key_value_heads": max(1, hidden // 128),
            "head_dim": 64,
            "layer_types": ["full_attention"] * layers,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--doc-tokens", type=int, default=200)
    ap.add_argument("--head-tokens", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="8,16,32")
    args = ap.parse_args()

    from crossrank import Reranker
    from crossrank.cpuinfo import describe

    path = build(Path(tempfile.mkdtemp()) / "qwen3-bench", args.hidden, args.layers)
    engine = Reranker(path).engine
    backend: Any = engine.backend  # CausalTorchBackend: the Backend protocol does not expose share_prefix
    rng = np.random.default_rng(0)
    vocab = 200
    head = rng.integers(3, vocab, args.head_tokens).tolist()
    suffix = rng.integers(3, vocab, 12).tolist()
    rows = [
        head + rng.integers(3, vocab, args.doc_tokens - int(rng.integers(0, 40))).tolist() + suffix
        for _ in range(args.candidates)
    ]
    types = [[0] * len(r) for r in rows]
    print(f"CPU: {describe()}")
    print(
        f"model: random Qwen3, hidden {args.hidden}, {args.layers} layers; {args.candidates} candidates × "
        f"~{args.doc_tokens} tokens, {args.head_tokens}-token shared head\n"
    )
    print("| batch size | full prompts (ms) | shared prefix (ms) | × | max |Δ score| |")
    print("|---:|---:|---:|---:|---:|")
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        times: dict[bool, list[float]] = {False: [], True: []}
        scores: dict[bool, np.ndarray] = {}
        for r in range(args.repeats + 1):  # the first round warms up
            for share in (False, True) if r % 2 == 0 else (True, False):
                backend.share_prefix = share
                t = time.perf_counter()
                scores[share] = engine.score_tokens(rows, types, batch_size=bs)
                if r:
                    times[share].append(time.perf_counter() - t)
        full, shared = statistics.median(times[False]), statistics.median(times[True])
        diff = float(np.max(np.abs(scores[False] - scores[True])))
        print(f"| {bs} | {full * 1000:.0f} | {shared * 1000:.0f} | {full / shared:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
