"""A real `htp serve` on 127.0.0.1 to measure, the load that clients put on it, and a synthetic index of any
size tiled from the sample index's real vectors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import yaml

from indexes.factory import resolve_factory
from indexes.faiss_index import build_faiss
from indexes.lexical import build_bm25
from indexes.store import current_version, open_index, write_version
from pipeline.records import full_text
from pipeline.service.client import ServiceClient, ServiceError, search_target

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


def config_variant(name: str, shipped: dict, sections: dict[str, dict]) -> Path:
    """`shipped` (config.yaml as read) with some keys of its sections replaced, written to runs/cache/{name}.yaml
    for a subprocess's `--config`."""
    path = Path("runs/cache") / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**shipped, **{key: {**shipped[key], **part} for key, part in sections.items()}}))
    return path


@contextmanager
def serving(index: Path, *options: str) -> Iterator[str]:
    """A real `htp serve` subprocess over `index` on a free 127.0.0.1 port, answering /health; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", str(index), "--port", str(port), *options]
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with ServiceClient(url, timeout=2) as service:
                    service.health()
                break
            except ServiceError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("htp serve did not come up")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def clients(url: str, mode: str, count: int, per_client: int, limit_s: float) -> tuple[int, float]:
    """`count` threads, each sending up to `per_client` queries; (answered, seconds)."""
    done = [0] * count
    stop_at = time.perf_counter() + limit_s

    def run(slot: int) -> None:
        with ServiceClient(url, timeout=60) as service:
            for i in range(per_client):
                if time.perf_counter() > stop_at:
                    return
                try:
                    service.search_one(QUERIES[(slot + i) % len(QUERIES)], 10, mode)
                except ServiceError:
                    continue
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
            target = search_target(QUERIES[(slot + i) % len(QUERIES)], 10, mode)
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
