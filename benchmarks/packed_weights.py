"""Linear weights packed once for oneDNN (`encoder.pack_weights`) against torch's plain linear, which re-packs
them on every product: a lone query's forward pass and a batch of documents, float32 and bfloat16, the two
variants alternating in one run, plus the cosine of their vectors.

    python -m benchmarks.packed_weights --dataset ../shared/data/cisi --docs 48 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.report import cpu_name, write_report
from benchmarks.harness.serving import QUERIES
from htp import EncoderConfig, HTPEncoder
from pipeline.records import full_text


def query_ms(encoder: HTPEncoder) -> list[float]:
    """Milliseconds of each of QUERIES encoded alone, as a served lone query is."""
    times = []
    for query in QUERIES:
        began = time.perf_counter()
        encoder.encode([query], kind="query", show_progress=False)
        times.append(1000 * (time.perf_counter() - began))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cisi"))
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (documents: every other one)")
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/packed_weights.md"))
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in (args.dataset / "corpus.jsonl").read_text().splitlines()[: args.docs]]
    docs = [full_text(row.get("title"), row["text"]) for row in rows]
    results = {}
    for dtype in args.dtypes.split(","):
        encoders = {
            name: HTPEncoder(EncoderConfig(model=args.model, dtype=dtype, device="cpu", pack_weights=on))
            for name, on in (("plain", False), ("packed", True))
        }
        vectors = {name: encoder.encode(docs, show_progress=False) for name, encoder in encoders.items()}
        queries = {name: encoder.encode(QUERIES, kind="query") for name, encoder in encoders.items()}
        cosines = np.concatenate(
            [(vectors["plain"] * vectors["packed"]).sum(1), (queries["plain"] * queries["packed"]).sum(1)]
        )
        times: dict[str, dict[str, list[float]]] = {name: {"query": [], "docs": []} for name in encoders}
        for round_ in range(args.rounds):
            for name, encoder in encoders.items():
                times[name]["query"] += query_ms(encoder)
                if round_ % 2 == 0:
                    began = time.perf_counter()
                    encoder.encode(docs, show_progress=False)
                    times[name]["docs"].append(time.perf_counter() - began)
        summary = {
            name: {"query_ms": statistics.median(t["query"]), "docs_s": statistics.median(t["docs"])}
            for name, t in times.items()
        }
        results[dtype] = {"summary": summary, "cosine_min": float(cosines.min()), "runs": times}
        print(dtype, summary, flush=True)
        del encoders
    lines = [
        f"`{args.model}` on {cpu_name()}, {torch.get_num_threads()} torch threads: the {len(QUERIES)} ten-word queries "
        f"each encoded alone ({args.rounds} rounds, median), and the first {args.docs} documents of "
        f"{args.dataset.name} in one encode (median of {(args.rounds + 1) // 2}); plain and packed alternate.",
        "",
        "| dtype | lone query, plain ms | packed ms | speed-up | documents, plain s | packed s | speed-up "
        "| cosine, min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dtype, result in results.items():
        plain, packed = result["summary"]["plain"], result["summary"]["packed"]
        lines.append(
            f"| {dtype} | {plain['query_ms']:.1f} | {packed['query_ms']:.1f} "
            f"| {plain['query_ms'] / packed['query_ms']:.2f}x | {plain['docs_s']:.2f} | {packed['docs_s']:.2f} "
            f"| {plain['docs_s'] / packed['docs_s']:.2f}x | {result['cosine_min']:.6f} |"
        )
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
