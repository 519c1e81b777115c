"""Load on a real `htp serve` over 127.0.0.1: single-client latency (p50, p95) and throughput with 1, 4 and 16
concurrent clients, dense and hybrid, bounded in requests and time. Start-up is not timed. Served: the sample
index with float32 and with bfloat16 query encoding, and a synthetic 100k-document index made from the sample's
real vectors (bfloat16 queries).

    python -m benchmarks.serve_load --index out/sample-index
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.harness.report import write_report
from benchmarks.harness.serving import LOADS, QUERIES, clients, config_variant, serving, synthetic_index
from benchmarks.harness.timing import paired_ratios, percentile
from indexes.store import open_index
from pipeline.service.client import ServiceClient


def measure(
    url: str,
    requests: int,
    per_client: int,
    limit_s: float,
    load: Callable[..., tuple[int, float]] = clients,
    rounds: int = 1,
) -> list[dict]:
    """Latency of sequential requests and throughput at 1, 4 and 16 clients, dense then hybrid; with several rounds
    (1, 4, 16 clients in turn each round) the median of each and of the per-round ratios 16 vs 1."""
    rows = []
    with ServiceClient(url, timeout=60) as client:
        for q in QUERIES:  # warm-up: model loaded, caches filled
            client.search_one(q, mode="hybrid")
        for mode in ("dense", "hybrid"):
            latencies = []
            for i in range(requests):
                began = time.perf_counter()
                client.search_one(QUERIES[i % len(QUERIES)], 10, mode)
                latencies.append(1000 * (time.perf_counter() - began))
            row = {"mode": mode, "p50_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95)}
            runs: dict[int, list[float]] = {count: [] for count in (1, 4, 16)}
            for _ in range(rounds):
                for count, rates in runs.items():
                    answered, seconds = load(url, mode, count, per_client, limit_s)
                    rates.append(answered / seconds)
            row.update({f"qps_{count}": statistics.median(rates) for count, rates in runs.items()})
            row["ratios_16_1"] = paired_ratios(runs[1], runs[16])
            row["ratio_16_1"] = statistics.median(row["ratios_16_1"])
            rows.append(row)
            print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--synthetic", type=int, default=100_000, help="documents in the synthetic index (0: none)")
    parser.add_argument("--requests", type=int, default=40, help="sequential requests for the latency figures")
    parser.add_argument("--per-client", type=int, default=16)
    parser.add_argument("--limit-s", type=float, default=60.0, help="time bound of each throughput run")
    parser.add_argument(
        "--also-waits",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[0.0],
        help="serve.batch_wait_ms values measured in bfloat16 beside config.yaml's own (which every row uses)",
    )
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an encoder setting over config.yaml's in every row (e.g. pack_weights=false); repeatable",
    )
    parser.add_argument(
        "--client",
        choices=sorted(LOADS),
        default="threads",
        help="throughput load: a thread per client with httpx (as before), or every client on one asyncio thread",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="throughput rounds (1, 4, 16 clients in turn); medians are reported"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.md"))
    args = parser.parse_args(argv)
    shipped = yaml.safe_load(Path("config.yaml").read_text())
    encoder = {key: yaml.safe_load(value) for key, _, value in (option.partition("=") for option in args.encoder)}
    default_wait = float(shipped["serve"]["batch_wait_ms"])
    extra = [("bfloat16", wait) for wait in args.also_waits if wait != default_wait]
    configs = {}
    for dtype, wait in [("float32", default_wait), ("bfloat16", default_wait), *extra]:
        configs[dtype, wait] = config_variant(
            f"serve_{dtype}_wait{wait:g}_{'_'.join(args.encoder)}",
            shipped,
            # the dtype explicit, whatever `auto` takes
            {"encoder": {**encoder, "dtype": dtype}, "serve": {"batch_wait_ms": wait}},
        )
    targets = [(args.index, dtype, wait, ("--config", str(path))) for (dtype, wait), path in configs.items()]
    if args.synthetic:
        big = synthetic_index(args.index, Path("runs/cache") / f"synthetic-{args.synthetic}", args.synthetic)
        targets.append((big, "bfloat16", default_wait, ("--config", str(configs["bfloat16", default_wait]))))
    rows = []
    for index, dtype, wait, options in targets:
        with serving(index, *options) as url:
            count = open_index(index).manifest.count
            rows += [
                {"index": str(index), "documents": count, "queries": dtype, "batch_wait_ms": wait, **row}
                for row in measure(url, args.requests, args.per_client, args.limit_s, LOADS[args.client], args.rounds)
            ]
    lines = [
        "`htp serve` on 127.0.0.1, 10-word queries, k=10, after a warm-up; latency over "
        f"{args.requests} sequential requests; throughput with up to {args.per_client} requests per client "
        f"({'one asyncio thread for all clients' if args.client == 'asyncio' else 'a thread per client, httpx'}). "
        "Documents are always float32 vectors; the query encoder runs in the dtype named; batch wait is "
        "serve.batch_wait_ms (queries queued during a pass always join the next one)."
        + (
            f" Throughput: medians of {args.rounds} rounds, 1, 4 and 16 clients in turn each round; '16 vs 1' is "
            "the median of the rounds' ratios (min-max in brackets)."
            if args.rounds > 1
            else ""
        )
        + (f" Encoder settings over config.yaml's: {', '.join(args.encoder)}." if args.encoder else ""),
        "",
        "| index | documents | query encoder | batch wait ms | mode | p50 ms | p95 ms | queries/s, 1 client "
        "| 4 clients | 16 clients | 16 vs 1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['index']} | {r['documents']} | {r['queries']} | {r['batch_wait_ms']:g} | {r['mode']} "
        f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
        f"| {r['qps_1']:.1f} | {r['qps_4']:.1f} | {r['qps_16']:.1f} | {r['ratio_16_1']:.2f}x"
        + (f" ({min(r['ratios_16_1']):.2f}-{max(r['ratios_16_1']):.2f})" if args.rounds > 1 else "")
        + " |"
        for r in rows
    ]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
