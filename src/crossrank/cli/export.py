"""``crossrank export``: write a portable model folder that a torch-free install serves.

The folder holds the ready-made graphs of the CPU paths (see :mod:`crossrank.backends.portable`),
the tokenizer, the config and a manifest; ``Reranker(DIR)``, ``crossrank serve --model DIR`` and
the adapters load it with ``pip install crossrank`` alone. Exporting needs the export toolchain:
``pip install 'crossrank[torch]'`` (and ``crossrank[openvino]`` for the OpenVINO variants).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from crossrank.errors import InvalidArgumentError
from crossrank.exported import DEFAULT_VARIANTS, VARIANT_FILES, VARIANT_PATHS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``export`` on the ``crossrank`` subparsers."""
    variants = "; ".join(f"{v}: {', '.join(VARIANT_PATHS[v])}" for v in VARIANT_FILES)
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write a portable model folder (graphs, tokenizer, manifest) that `pip install crossrank` serves",
        description="Export a cross-encoder to a folder of ready-made CPU graphs that an install without torch "
        f"loads with Reranker(DIR). Variants — {variants}.",
    )
    p.add_argument(
        "model",
        help="cross-encoder folder or Hub id (causal-LM rerankers are not exportable); a sentence-transformers "
        "bi-encoder folder (e.g. all-MiniLM-L6-v2) is detected and exported as an embedder for `crossrank query`",
    )
    p.add_argument("--out", required=True, help="the folder to write (must be new or empty)")
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma list from {','.join(VARIANT_FILES)}, or all (default: {','.join(DEFAULT_VARIANTS)})",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier export at --out")
    p.add_argument("--trust-remote-code", action="store_true", help="let the export run the model's own code")
    p.add_argument("--local-files-only", action="store_true", help="never download a Hub id (use the local cache)")
    p.add_argument("--revision", default=None, help="Hub revision of the model")
    p.add_argument("--json", action="store_true", help="print what was written as JSON (no progress bar)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Export, then print the variants table (or JSON)."""
    from crossrank.backends.portable import export_model, parse_variants
    from crossrank.retrieval.embedder_export import export_embedder, is_bi_encoder
    from crossrank.retrieval.embeddings import DEFAULT_EMBEDDER, resolve_embedder

    spec = resolve_embedder(args.model) if args.model in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2") else args.model
    if is_bi_encoder(spec):  # a bi-encoder: one ONNX fp32 graph plus pooling, for the light install's queries
        if args.variants not in ("fp32", ",".join(DEFAULT_VARIANTS)):
            raise InvalidArgumentError(f"{args.model} is a bi-encoder: its export is one fp32 graph (drop --variants)")
        manifest = export_embedder(spec, args.out, overwrite=args.force)
        if args.json:
            print(json.dumps({"out": args.out, "manifest": manifest}))
        else:
            print(
                f"exported the bi-encoder {manifest['source']['model']} to {args.out} (ONNX fp32, "
                f"{manifest['pooling']} pooling, normalize={manifest['normalize']}, "
                f"max length {manifest['max_length']})"
            )
            print(f"\nquery with it: crossrank query TEXT --embedder {args.out}  (no torch needed)")
        return 0
    report = export_model(
        args.model,
        args.out,
        variants=parse_variants(args.variants),
        trust_remote_code=args.trust_remote_code,
        local_files_only=args.local_files_only,
        revision=args.revision,
        overwrite=args.force,
        progress=None if not args.json else False,
    )
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.table())
        print(f"\nload it with: Reranker({str(report.out)!r})  ·  crossrank serve --model {report.out}")
    return 0
