"""Where a warm query's time goes: each stage of `Searcher.search` timed on its own, medians over repeated
10-word queries, in one process with the model loaded (start-up is not timed).

    python -m benchmarks.query_profile --index out/sample-index
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.harness.report import write_report
from benchmarks.harness.serving import QUERIES
from htp import HTPEncoder
from pipeline.query.fusion import fuse
from pipeline.query.searcher import Searcher
from pipeline.vectors import prepare


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - began), out


def profile(searcher: Searcher, queries: list[str], k: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each stage of a hybrid search of `queries` (one batch), over `repeats` runs."""
    encoder, index, settings = searcher.encoder, searcher.index, searcher.settings
    depth = max(k, settings.candidates)
    stages: dict[str, list[float]] = {}
    for _ in range(repeats):
        row: dict[str, float] = {}
        row["tokenise + segment"], layouts = timed(lambda: encoder.layouts(queries, "query"))
        count = encoder.layers_to_run(encoder.config.exit_layer)
        row["forward + pool"], vectors = timed(lambda: encoder.forward(layouts, [count])[0].cpu().numpy())

        def calibrate() -> object:
            out = prepare(vectors, index.center)
            return searcher.calibration.queries(out) if searcher.calibration is not None else out

        row["center + calibration"], prepared = timed(calibrate)
        row["faiss search"], dense = timed(lambda: index.search(prepared, depth, settings.nprobe, settings.ef_search))
        row["bm25 search"], lexical = timed(lambda: index.search_bm25(queries, depth))
        row["fusion"], ranked = timed(
            lambda: [
                fuse(d, b, searcher.fusion, k, settings.rrf_k, settings.bm25_weight) for d, b in zip(dense, lexical)
            ]
        )
        row["read documents"], _ = timed(lambda: index.documents(sorted({i for hits in ranked for i, _ in hits})))
        row["Searcher.search (end to end)"], _ = timed(
            lambda: (
                [searcher.search(q, k, "hybrid") for q in queries]
                if len(queries) == 1
                else searcher.rankings(queries, k, "hybrid")
            )
        )
        for name, ms in row.items():
            stages.setdefault(name, []).append(ms)
    return {name: statistics.median(values) for name, values in stages.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/query_profile.md"))
    args = parser.parse_args(argv)
    base = Searcher(args.index).encoder
    variants = {"prefix cache on": True, "prefix cache off": False}
    searchers = {
        name: Searcher(
            args.index, encoder=HTPEncoder(replace(base.config, prefix_cache=on), base.model, base.tokenizer)
        )
        for name, on in variants.items()
    }
    for searcher in searchers.values():  # warm-up: model loaded, kernels and caches ready
        for query in QUERIES:
            searcher.search(query, 10, "hybrid")
    results: dict[str, dict[str, float]] = {}
    for batch in (1, 16):
        queries = (QUERIES * 2)[:batch]
        for name, searcher in searchers.items():  # alternated in one run so both see the same machine
            results[f"{batch} x 10-word query, {name}"] = profile(searcher, queries, 10, args.repeats)
    columns = list(results)
    stages = list(results[columns[0]])
    lines = [
        f"Warm hybrid search over `{args.index}`, median ms of {args.repeats} runs per stage "
        f"({torch.get_num_threads()} torch threads); a batch of 16 is one forward pass.",
        "",
        "| stage | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    lines += [f"| {stage} | " + " | ".join(f"{results[c][stage]:.1f}" for c in columns) + " |" for stage in stages]
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
