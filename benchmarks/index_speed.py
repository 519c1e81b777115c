"""Index build/search speed and recall@10 through indexes/ and through raw FAISS side by side,
plus end-to-end `htp query` latency against a built index.

Synthetic clustered, normalised vectors of the model's dimension; runs alternate (wrapper, raw, raw,
wrapper, ...) and medians are reported with the wrapper's overhead ratio.

    python -m benchmarks.index_speed --sizes 10000,100000 --query-index out/sample-index
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

from indexes.factory import ivf_lists
from indexes.faiss_index import build_faiss, search_faiss

K = 10


def clustered(n: int, dim: int, seed: int, clusters: int = 256) -> np.ndarray:
    """Gaussian mixture on the unit sphere, so approximate indexes face realistic neighbourhoods."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def raw_build(factory: str, dim: int, vectors: np.ndarray, train: np.ndarray) -> faiss.Index:
    """The same work done with FAISS calls only."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if "HNSW" in factory:
        faiss.downcast_index(index).hnsw.efConstruction = 80
    if not index.is_trained:
        index.train(train)
    index.add(vectors)
    return index


def raw_search(index: faiss.Index, queries: np.ndarray) -> np.ndarray:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(16, ivf.nlist)
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        faiss.downcast_index(index).hnsw.efSearch = 128
    return index.search(queries, K)[1]


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, truth)]))


def measure(factory: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, repeats: int) -> dict:
    """Median build and search seconds for wrapper and raw, alternating, and their recall@10."""
    dim = vectors.shape[1]
    train = vectors[: min(len(vectors), 100_000)]
    times = {"wrapper_build": [], "raw_build": [], "wrapper_search": [], "raw_search": []}
    out = {}
    for repeat in range(repeats):
        for side in (("wrapper", "raw") if repeat % 2 == 0 else ("raw", "wrapper")):
            began = time.perf_counter()
            if side == "wrapper":
                index = build_faiss(factory, dim, np.array_split(vectors, 10), train)
            else:
                index = raw_build(factory, dim, vectors, train)
            times[f"{side}_build"].append(time.perf_counter() - began)
            began = time.perf_counter()
            rows = search_faiss(index, queries, K)[1] if side == "wrapper" else raw_search(index, queries)
            times[f"{side}_search"].append(time.perf_counter() - began)
            out[f"{side}_recall@10"] = recall(rows, truth)
    for key, values in times.items():
        out[key] = statistics.median(values)
    out["build_overhead"] = out["wrapper_build"] / out["raw_build"] - 1
    out["search_overhead"] = out["wrapper_search"] / out["raw_search"] - 1
    return out


def query_latency(index_dir: Path, questions: list[str], repeats: int) -> dict:
    """p50/p95 seconds of `htp query` as a user runs it (new process each time: imports, model load, search)."""
    seconds = []
    for i in range(repeats):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "query", str(index_dir), questions[i % len(questions)]],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - began)
    ordered = sorted(seconds)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "runs": len(ordered)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-index", type=Path, help="a built index for `htp query` latency")
    parser.add_argument("--query-runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index_speed.json"))
    args = parser.parse_args(argv)
    results = {"setup": {"dim": args.dim, "queries": args.queries, "repeats": args.repeats, "threads": faiss.omp_get_max_threads()}, "rows": []}
    for n in (int(s) for s in args.sizes.split(",")):
        vectors, queries = clustered(n, args.dim, 0), clustered(args.queries, args.dim, 1)
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(vectors)
        truth = exact.search(queries, K)[1]
        for factory in ("Flat", "HNSW32", f"IVF{ivf_lists(n)},PQ48"):
            row = {"n": n, "factory": factory, **measure(factory, vectors, queries, truth, args.repeats)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.query_index:
        results["htp_query"] = query_latency(args.query_index, ["compressed archive files", "parse command line options",
                                                                "random numbers", "send email"], args.query_runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\n| n | factory | build s (indexes/) | build s (raw) | search s, {args.queries} q (indexes/) | search s (raw) | "
          "recall@10 | build overhead | search overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(f"| {r['n']} | {r['factory']} | {r['wrapper_build']:.2f} | {r['raw_build']:.2f} | {r['wrapper_search']:.3f} | "
              f"{r['raw_search']:.3f} | {r['wrapper_recall@10']:.3f} | {100 * r['build_overhead']:+.1f}% | {100 * r['search_overhead']:+.1f}% |")
    if "htp_query" in results:
        q = results["htp_query"]
        print(f"\n`htp query` end to end: p50 {q['p50']:.2f} s, p95 {q['p95']:.2f} s over {q['runs']} runs")


if __name__ == "__main__":
    main()
