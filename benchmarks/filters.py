"""Filtered search on a 100k-document index made from the sample index's real vectors (tiled with noise, as
benchmarks.serve_load does), with a metadata field matching 1%, 10% and 50% of the documents: the latency of a
filtered dense search (FAISS with an IDSelector, the exhaustive retry included) against the unfiltered one, and
its recall@10 against brute force over the matching rows; BM25 with and without the filter. Queries are stored
vectors with noise (no model is needed), one at a time, medians and p95 of 200.

    python -m benchmarks.filters [--sample out/sample-index] [--count 100000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.harness.report import write_report
from benchmarks.harness.serving import synthetic_index
from benchmarks.harness.timing import percentile
from indexes.faiss_index import build_faiss, search_faiss
from indexes.lexical import search_bm25
from indexes.store import open_index
from pipeline.query.filters import allowed

FILTERS = {"1%": {"bucket": 0}, "10%": {"bucket": {"$lt": 10}}, "50%": {"bucket": {"$lt": 50}}}


def timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - began), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/filters.md"))
    args = parser.parse_args(argv)
    folder = synthetic_index(args.sample, Path(f"runs/filters-{args.count}"), args.count)
    index = open_index(folder)
    vectors = index.faiss.reconstruct_n(0, index.faiss.ntotal)
    buckets = pa.table({"bucket": pa.array(np.arange(args.count) % 100, pa.int64())})
    types = {"bucket": "integer"}
    rng = np.random.default_rng(1)
    picks = rng.choice(args.count, args.queries, replace=False)
    queries = vectors[picks] + rng.normal(0, 0.05, size=(args.queries, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [doc["title"] or doc["text"][:60] for doc in index.documents([index.ids[p] for p in picks])]
    indexes = {
        "Flat": build_faiss("Flat", vectors.shape[1], [vectors], None),
        "IVF1024,Flat": build_faiss("IVF1024,Flat", vectors.shape[1], [vectors], vectors[::2]),
        index.manifest.factory: index.faiss,
    }
    rows = []
    for factory, faiss_index in indexes.items():
        for share, where in {"none": None, **FILTERS}.items():
            mask = None if where is None else allowed(where, buckets, types)
            latencies, recalls = [], []
            for query in queries:
                ms, (_, found) = timed(lambda q=query, m=mask: search_faiss(faiss_index, q[None, :], 10, allowed=m))
                latencies.append(ms)
                candidates = np.arange(args.count) if mask is None else np.flatnonzero(mask)
                truth = candidates[np.argsort(-(vectors[candidates] @ query), kind="stable")[:10]]
                recalls.append(len(set(found[0].tolist()) & set(truth.tolist())) / 10)
                if mask is not None:
                    assert mask[found[0][found[0] >= 0]].all()
            rows.append(
                {
                    "index": factory,
                    "filter": share,
                    "p50_ms": statistics.median(latencies),
                    "p95_ms": percentile(latencies, 0.95),
                    "recall@10": float(np.mean(recalls)),
                }
            )
            print(rows[-1], flush=True)
    for share, where in {"none": None, **FILTERS}.items():
        mask = None if where is None else allowed(where, buckets, types)
        latencies = [timed(lambda t=text, m=mask: search_bm25(index.bm25, [t], 10, m))[0] for text in texts]
        rows.append(
            {
                "index": "BM25",
                "filter": share,
                "p50_ms": statistics.median(latencies),
                "p95_ms": percentile(latencies, 0.95),
                "recall@10": None,
            }
        )
        print(rows[-1], flush=True)
    lines = [
        f"Filtered search over {args.count:,} documents ({vectors.shape[1]}-d vectors tiled from "
        f"`{args.sample}`), one query at a time, {args.queries} queries; a metadata field matching the share "
        "shown; recall@10 against brute force over the matching rows.",
        "",
        "| index | filter matches | p50 ms | p95 ms | recall@10 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        recall = "-" if r["recall@10"] is None else f"{r['recall@10']:.3f}"
        lines.append(f"| {r['index']} | {r['filter']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {recall} |")
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
