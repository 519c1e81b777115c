"""Load on a real `htp serve` over 127.0.0.1: single-client latency (p50, p95) and throughput with 1, 4 and 16
concurrent clients, dense and hybrid, bounded in requests and time. Start-up is not timed.

    python -m benchmarks.serve_load --index out/sample-index
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from benchmarks.common import write_report

QUERIES = [  # ten words each, as the latency target assumes
    "how do I read and write compressed archive files quickly",
    "parse command line arguments and print a helpful usage message",
    "send an email message through a mail server with attachments",
    "compute a secure hash digest of a large binary file",
    "run a function later in a background thread with timeout",
    "read rows from a comma separated values file into dictionaries",
    "generate random numbers from a normal distribution with seed value",
    "open a network socket and listen for incoming client connections",
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def clients(url: str, mode: str, count: int, per_client: int, limit_s: float) -> tuple[int, float]:
    """`count` threads, each sending up to `per_client` queries; (answered, seconds)."""
    done = [0] * count
    stop_at = time.perf_counter() + limit_s

    def run(slot: int) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(per_client):
                if time.perf_counter() > stop_at:
                    return
                q = QUERIES[(slot + i) % len(QUERIES)]
                if client.get(f"{url}/search", params={"q": q, "mode": mode, "k": 10}).status_code == 200:
                    done[slot] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--requests", type=int, default=40, help="sequential requests for the latency figures")
    parser.add_argument("--per-client", type=int, default=16)
    parser.add_argument("--limit-s", type=float, default=60.0, help="time bound of each throughput run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.md"))
    args = parser.parse_args(argv)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", str(args.index), "--port", str(port)])
    rows = []
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("htp serve did not come up")
            time.sleep(0.5)
        with httpx.Client(timeout=60) as client:
            for q in QUERIES:  # warm-up: model loaded, caches filled
                client.get(f"{url}/search", params={"q": q, "mode": "hybrid"})
            for mode in ("dense", "hybrid"):
                latencies = []
                for i in range(args.requests):
                    began = time.perf_counter()
                    client.get(f"{url}/search", params={"q": QUERIES[i % len(QUERIES)], "mode": mode, "k": 10})
                    latencies.append(1000 * (time.perf_counter() - began))
                row = {"mode": mode, "p50_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95)}
                for count in (1, 4, 16):
                    answered, seconds = clients(url, mode, count, args.per_client, args.limit_s)
                    row[f"qps_{count}"] = answered / seconds
                rows.append(row)
                print(row, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = [f"`htp serve {args.index}` on 127.0.0.1, 10-word queries, k=10, after a warm-up; latency over "
             f"{args.requests} sequential requests; throughput with up to {args.per_client} requests per client.", "",
             "| mode | p50 ms | p95 ms | queries/s, 1 client | 4 clients | 16 clients | 16 vs 1 |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['qps_1']:.1f} | {r['qps_4']:.1f} | "
              f"{r['qps_16']:.1f} | {r['qps_16'] / r['qps_1']:.1f}x |" for r in rows]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
