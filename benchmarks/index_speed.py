"""Index build/search speed and recall@10 through indexes/ and through raw FAISS side by side, and the
end-to-end latency of `htp query` against a built index.

Synthetic clustered, normalised vectors (a gaussian mixture; queries drawn from the same mixture) of the model's
dimension, for Flat, HNSW32 and IVF-PQ. Each repeat builds and searches once through indexes/ (build_faiss +
search_faiss) and once with FAISS calls only, alternating which goes first; medians are reported, with the
wrapper/raw time ratio. Recall@10 is against exact flat search. With --query-index, query latency is measured
two ways after one untimed warm-up: `htp query` as a user runs it (a new process each time: imports, model
load, encoding, search), and `Searcher.search` in a process that has already loaded the index and model
(what a service pays per query); p50/p95 of each.

    python -m benchmarks.index_speed --sizes 10000,100000
    python -m benchmarks.index_speed --sizes "" --query-index out/sample-index \
        --out benchmarks/results/query_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.harness.report import write_report
from indexes.factory import ivf_lists
from indexes.faiss_index import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    EF_CONSTRUCTION,
    build_faiss,
    search_faiss,
)
from pipeline.query.searcher import Searcher

K = 10
SHARDS = 10
QUESTIONS = [
    "compressed archive files",
    "parse command line options",
    "random numbers",
    "send email",
    "read a configuration file",
    "measure elapsed time",
    "copy a directory tree",
    "format dates",
]
PQ_MAX = 48


def mixture(n: int, dim: int, seed: int, clusters: int = 256) -> np.ndarray:
    """Gaussian mixture on the unit sphere, so approximate indexes face realistic neighbourhoods."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ivf_pq(n: int, dim: int) -> str:
    """The IVF-PQ string `auto` would use for n vectors under a tight budget: its nlist, PQ48 (or the largest
    divisor below)."""
    m = max(m for m in range(1, min(PQ_MAX, dim // 4) + 1) if dim % m == 0)
    return f"IVF{ivf_lists(n)},PQ{m}"


def raw_build(factory: str, dim: int, shards: list[np.ndarray], train: np.ndarray) -> faiss.Index:
    """What build_faiss does, with FAISS calls only."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = EF_CONSTRUCTION
    if isinstance(index, faiss.IndexIVFPQ):
        index.do_polysemous_training = False
    if not index.is_trained:
        index.train(train)
    for shard in shards:
        index.add(shard)
    return index


def raw_search(index: faiss.Index, queries: np.ndarray) -> np.ndarray:
    """What search_faiss does with default parameters, with FAISS calls only."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(DEFAULT_NPROBE, index.nlist)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(DEFAULT_EF_SEARCH, K)
    return index.search(queries, K)[1]


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-10 found in the top-10."""
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, truth)]))


def measure(factory: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, repeats: int) -> dict:
    """Median build and search seconds for wrapper and raw, alternating which runs first, and their recall@10."""
    dim = vectors.shape[1]
    shards = np.array_split(vectors, SHARDS)
    times: dict[str, list[float]] = {"wrapper_build": [], "raw_build": [], "wrapper_search": [], "raw_search": []}
    out: dict = {}
    for repeat in range(repeats):
        for side in ("wrapper", "raw") if repeat % 2 == 0 else ("raw", "wrapper"):
            began = time.perf_counter()
            if side == "wrapper":
                index = build_faiss(factory, dim, shards, vectors)
            else:
                index = raw_build(factory, dim, shards, vectors)
            times[f"{side}_build"].append(time.perf_counter() - began)
            began = time.perf_counter()
            rows = search_faiss(index, queries, K)[1] if side == "wrapper" else raw_search(index, queries)
            times[f"{side}_search"].append(time.perf_counter() - began)
            out[f"{side}_recall@10"] = recall(rows, truth)
    out.update({key: statistics.median(values) for key, values in times.items()})
    out["build_ratio"] = out["wrapper_build"] / out["raw_build"]
    out["search_ratio"] = out["wrapper_search"] / out["raw_search"]
    return out


def percentiles(seconds: list[float]) -> dict:
    """p50 and p95 (nearest rank) of a list of durations."""
    ordered = sorted(seconds)
    return {"p50": statistics.median(ordered), "p95": ordered[round(0.95 * (len(ordered) - 1))], "runs": len(ordered)}


def cli_latency(index_dir: Path, runs: int) -> dict:
    """`htp query INDEX_DIR question`, one new process per run, after one untimed run that fills caches."""
    seconds = []
    for run in range(runs + 1):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "query", str(index_dir), QUESTIONS[run % len(QUESTIONS)]],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds.append(time.perf_counter() - began)
    return percentiles(seconds[1:])


def searcher_latency(index_dir: Path, runs: int) -> dict:
    """Searcher.search per query in one process that has opened the index and loaded the model (one warm-up query)."""
    searcher = Searcher(index_dir)
    searcher.search(QUESTIONS[0])
    seconds = []
    for run in range(runs):
        began = time.perf_counter()
        searcher.search(QUESTIONS[run % len(QUESTIONS)])
        seconds.append(time.perf_counter() - began)
    return percentiles(seconds)


def table(rows: list[dict], queries: int) -> str:
    """The results as a Markdown table."""
    lines = [
        f"| n | factory | build s (indexes/) | build s (raw) | build ratio | search s, {queries} q (indexes/) | "
        "search s (raw) | search ratio | recall@10 (indexes/) | recall@10 (raw) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['factory']} | {r['wrapper_build']:.2f} | {r['raw_build']:.2f} | "
            f"{r['build_ratio']:.3f} | {r['wrapper_search']:.4f} | {r['raw_search']:.4f} | "
            f"{r['search_ratio']:.3f} | {r['wrapper_recall@10']:.3f} | {r['raw_recall@10']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every size and factory, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes; empty for none")
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-index", type=Path, help="a built index to time `htp query` against")
    parser.add_argument("--query-runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index_speed.md"))
    args = parser.parse_args(argv)
    setup = {
        "dim": args.dim,
        "queries": args.queries,
        "k": K,
        "repeats": args.repeats,
        "shards": SHARDS,
        "threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
    }
    rows = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        data = mixture(n + args.queries, args.dim, seed=0)
        vectors, queries = data[:n], data[n:]
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(vectors)
        truth = exact.search(queries, K)[1]
        for factory in ("Flat", "HNSW32", ivf_pq(n, args.dim)):
            rows.append({"n": n, "factory": factory, **measure(factory, vectors, queries, truth, args.repeats)})
            print(json.dumps(rows[-1]), flush=True)
    results: dict = {"setup": setup, "rows": rows}
    report = table(rows, args.queries) if rows else ""
    if args.query_index:
        results["htp_query"] = cli = cli_latency(args.query_index, args.query_runs)
        results["searcher"] = warm = searcher_latency(args.query_index, 5 * args.query_runs)
        report += (
            f"\n\n`htp query` end to end (new process: imports, model load, encode, search): p50 {cli['p50']:.2f} s, "
            f"p95 {cli['p95']:.2f} s over {cli['runs']} runs\n`Searcher.search` in a warm process: "
            f"p50 {1000 * warm['p50']:.0f} ms, p95 {1000 * warm['p95']:.0f} ms over {warm['runs']} queries"
        )
    write_report(args.out, report.splitlines(), results)


if __name__ == "__main__":
    main()
