"""Load on a real `htp serve` over 127.0.0.1: single-client latency (p50, p95) and throughput with 1, 4 and 16
concurrent clients, dense and hybrid, bounded in requests and time. Start-up is not timed. Served: the sample
index with float32 and with bfloat16 query encoding, and a synthetic 100k-document index made from the sample's
real vectors (bfloat16 queries).

    python -m benchmarks.serve_load --index out/sample-index
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np
import pyarrow as pa
import yaml

from benchmarks.common import config_variant, serving, write_report
from indexes.factory import resolve_factory
from indexes.faiss_index import build_faiss
from indexes.lexical import build_bm25
from indexes.store import current_version, open_index, write_version
from pipeline.records import full_text

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


def asyncio_clients(url: str, mode: str, count: int, per_client: int, limit_s: float) -> tuple[int, float]:
    """The same load from one thread: `count` keep-alive connections on asyncio sockets, each request written as
    raw HTTP/1.1 and its answer read by Content-Length, so the load generator takes little of the 2 cores it shares
    with the service (16 httpx threads take far more); (answered, seconds)."""
    address = urlsplit(url)

    async def run(slot: int, stop_at: float) -> int:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        answered = 0
        for i in range(per_client):
            if time.perf_counter() > stop_at:
                break
            target = "/search?" + urlencode({"q": QUERIES[(slot + i) % len(QUERIES)], "mode": mode, "k": 10})
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {address.hostname}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            length = next(int(value) for name, value in fields if name.strip().lower() == b"content-length")
            await reader.readexactly(length)
            answered += head.startswith(b"HTTP/1.1 200")
        writer.close()
        return answered

    async def all_clients() -> int:
        stop_at = time.perf_counter() + limit_s
        return sum(await asyncio.gather(*(run(slot, stop_at) for slot in range(count))))

    began = time.perf_counter()
    answered = asyncio.run(all_clients())
    return answered, time.perf_counter() - began


LOADS = {"threads": clients, "asyncio": asyncio_clients}


def synthetic_index(sample: Path, out: Path, count: int, seed: int = 0) -> Path:
    """An index of `count` documents made from the sample index: its real vectors tiled with small noise (and
    re-normalised), its texts repeated with a copy number, BM25 over them, its centre and calibration kept, the
    FAISS factory `auto` picks at that size. Built once; an existing one is reused."""
    if current_version(out) is not None:
        return out
    source = open_index(sample)
    rows = source.faiss.ntotal
    base = source.faiss.reconstruct_n(0, rows)
    rng = np.random.default_rng(seed)
    picks = np.arange(count) % rows
    vectors = base[picks] + rng.normal(0, 0.02, size=(count, base.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = source.documents(source.ids)
    ids = [f"s{i}" for i in range(count)]
    titles = [docs[p]["title"] for p in picks]
    texts = [f"{docs[p]['text']} (copy {i // rows})" for i, p in enumerate(picks)]
    factory = resolve_factory("auto", count, base.shape[1], 4096 * 2**20)
    index = build_faiss(factory, base.shape[1], np.array_split(vectors, 20), vectors[:20000])
    bm25 = build_bm25([full_text(t, x) for t, x in zip(titles, texts)])
    manifest = replace(source.manifest, count=count, factory=factory)
    write_version(
        out,
        index,
        ids,
        pa.table({"id": ids, "title": titles, "text": texts}),
        manifest,
        bm25=bm25,
        center=source.center,
        calibration=source.calibration_arrays or None,
    )
    return out


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
    with httpx.Client(timeout=60) as client:
        for q in QUERIES:  # warm-up: model loaded, caches filled
            client.get(f"{url}/search", params={"q": q, "mode": "hybrid"})
        for mode in ("dense", "hybrid"):
            latencies = []
            for i in range(requests):
                began = time.perf_counter()
                client.get(f"{url}/search", params={"q": QUERIES[i % len(QUERIES)], "mode": mode, "k": 10})
                latencies.append(1000 * (time.perf_counter() - began))
            row = {"mode": mode, "p50_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95)}
            runs: dict[int, list[float]] = {count: [] for count in (1, 4, 16)}
            for _ in range(rounds):
                for count, rates in runs.items():
                    answered, seconds = load(url, mode, count, per_client, limit_s)
                    rates.append(answered / seconds)
            row.update({f"qps_{count}": statistics.median(rates) for count, rates in runs.items()})
            row["ratios_16_1"] = [many / one for one, many in zip(runs[1], runs[16])]
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
