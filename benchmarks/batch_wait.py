"""`serve.batch_wait_ms` side by side: two real `htp serve` processes over one index, one per wait, asked in
turn (a lone request to one, then the same to the other), so drift on a shared machine hits both alike.
Reports each wait's lone-query latency, the service's own time for it (`took_ms`) and throughput at 16 clients.

    python -m benchmarks.batch_wait --index out/sample-index --waits 0,5
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml

from benchmarks.harness.report import cpu_name, write_report
from benchmarks.harness.serving import QUERIES, clients, config_variant, serving
from benchmarks.harness.timing import percentile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--waits", type=lambda text: [float(v) for v in text.split(",")], default=[0.0, 5.0])
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--requests", type=int, default=80, help="lone requests to each service")
    parser.add_argument("--rounds", type=int, default=3, help="alternating 16-client throughput rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_wait.md"))
    args = parser.parse_args(argv)
    shipped = yaml.safe_load(Path("config.yaml").read_text())
    with ExitStack() as stack:
        urls = {}
        for wait in args.waits:
            path = config_variant(f"batch_wait_{wait:g}", shipped, {"serve": {"batch_wait_ms": wait}})
            urls[wait] = stack.enter_context(serving(args.index, "--config", str(path)))
        latency: dict[float, list[float]] = {wait: [] for wait in args.waits}
        took: dict[float, list[float]] = {wait: [] for wait in args.waits}
        rates: dict[float, list[float]] = {wait: [] for wait in args.waits}
        with httpx.Client(timeout=60) as client:
            for url in urls.values():  # warm-up: model loaded, caches filled
                for q in QUERIES:
                    client.get(f"{url}/search", params={"q": q, "mode": args.mode})
            for i in range(args.requests):
                for wait, url in urls.items():
                    began = time.perf_counter()
                    body = client.get(
                        f"{url}/search", params={"q": QUERIES[i % len(QUERIES)], "mode": args.mode, "k": 10}
                    ).json()
                    latency[wait].append(1000 * (time.perf_counter() - began))
                    took[wait].append(body["took_ms"])
        for _ in range(args.rounds):
            for wait, url in urls.items():
                answered, seconds = clients(url, args.mode, 16, 16, 60.0)
                rates[wait].append(answered / seconds)
    rows = [
        {
            "batch_wait_ms": wait,
            "p50_ms": statistics.median(latency[wait]),
            "p95_ms": percentile(latency[wait], 0.95),
            "took_p50_ms": statistics.median(took[wait]),
            "qps_16": statistics.median(rates[wait]),
            "qps_16_rounds": rates[wait],
        }
        for wait in args.waits
    ]
    lines = [
        f"`htp serve` over {args.index} on {cpu_name()}, {args.mode}, k=10, 10-word queries; one service per wait, "
        f"asked in turn: {args.requests} lone requests each, then {args.rounds} alternating rounds of 16 clients x 16 "
        "requests (median). took_ms is the service's own time from the request's arrival at the search handler.",
        "",
        "| batch wait ms | p50 ms | p95 ms | took_ms p50 | queries/s, 16 clients |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batch_wait_ms']:g} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['took_p50_ms']:.1f} "
        f"| {r['qps_16']:.1f} |"
        for r in rows
    ]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
