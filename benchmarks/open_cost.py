"""What the integrity checks cost when an index is opened: `open_index` (manifest digest, file sizes, SHA-256 of
every file but docs, memory-mapped BM25 arrays and on-disk IVF lists included, counts against the files) against
the same files loaded with no check at all, on synthetic indexes (Flat in memory, IVF with its lists on disk; both
with BM25), runs alternating, medians. Also `htp verify`'s full re-hash.

    python -m benchmarks.open_cost --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness.report import write_report
from indexes.faiss_index import build_faiss
from indexes.lexical import build_bm25, load_bm25
from indexes.ondisk import IVF_DATA, build_on_disk, read_index
from indexes.store import Manifest, open_index, write_version

DIM = 640  # the default model's (Gemma 3 270M) hidden size
LAYOUTS = {"Flat": "Flat", "IVF on disk": "IVF1024,Flat"}


def unchecked_open(version: Path) -> None:
    """The same loads as OpenIndex with every check left out."""
    read_index(version / "index.faiss", on_disk=(version / IVF_DATA).is_file())
    pq.read_table(version / "ids.parquet").column("id").to_pylist()
    np.load(version / "center.npy")
    load_bm25(version / "bm25")
    pq.ParquetFile(version / "docs.parquet", memory_map=True)


def unhashed(version: Path) -> None:
    """Move every file's modification time on by a nanosecond, so the next open hashes them all again, as a new
    process would (the store keeps the digests it checked, keyed by path, inode, size and mtime)."""
    for path in version.rglob("*"):
        if path.is_file():
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/open_cost.md"))
    args = parser.parse_args(argv)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"doc-{i}" for i in range(n)]
        texts = [f"text of document {i} about topic {i % 997} and matter {i % 101} " * 6 for i in range(n)]
        docs = pa.table({"id": ids, "title": [""] * n, "text": texts})
        bm25 = build_bm25(texts)
        for layout, factory in LAYOUTS.items():
            manifest = Manifest(
                dimension=DIM,
                metric="inner_product",
                count=n,
                factory=factory,
                config_hash="h",
                encoder={"model": "synthetic", "method": "htp"},
                package_versions={},
            )
            with tempfile.TemporaryDirectory() as folder:
                ivf_data = None
                if layout == "Flat":
                    index = build_faiss(factory, DIM, [vectors], None)
                else:
                    index = build_on_disk(factory, DIM, [vectors], vectors[:50_000], Path(folder) / "scratch", 50_000)
                    ivf_data = Path(folder) / "scratch" / IVF_DATA
                version = write_version(
                    Path(folder), index, ids, docs, manifest, bm25=bm25, center=vectors.mean(axis=0), ivf_data=ivf_data
                )
                del index
                checked, again, plain, full = [], [], [], []
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    unchecked_open(version)
                    plain.append(time.perf_counter() - began)
                    unhashed(version)
                    began = time.perf_counter()
                    open_index(Path(folder))
                    checked.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    open_index(Path(folder))
                    again.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    open_index(Path(folder), verify=True)
                    full.append(time.perf_counter() - began)
                size = sum(p.stat().st_size for p in version.rglob("*") if p.is_file())
            row = {
                "layout": layout,
                "vectors": n,
                "index_mb": round(size / 2**20, 1),
                "unchecked_s": statistics.median(plain),
                "open_index_s": statistics.median(checked),
                "reopen_s": statistics.median(again),
                "verify_s": statistics.median(full),
            }
            row["overhead"] = row["open_index_s"] / row["unchecked_s"] - 1
            row["reopen_overhead"] = row["reopen_s"] / row["unchecked_s"] - 1
            rows.append(row)
            print(row, flush=True)
    lines = [
        (
            f"Opening synthetic indexes ({DIM}-d, with ids, docs, centre and BM25), medians of {args.repeats}, "
            "runs alternating; `again` is a second open in the same process (files already hashed there are not "
            "hashed again)."
        ),
        "",
        (
            "| index | vectors | files MB | unchecked open s | open_index, first in a process s "
            "| overhead | open_index again s | overhead | verify=True s |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['layout']} | {r['vectors']:,} | {r['index_mb']} | {r['unchecked_s']:.3f} | {r['open_index_s']:.3f} | "
        f"{100 * r['overhead']:+.0f}% | {r['reopen_s']:.3f} | {100 * r['reopen_overhead']:+.0f}% | "
        f"{r['verify_s']:.3f} |"
        for r in rows
    ]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
