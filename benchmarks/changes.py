"""Live changes against a full rebuild on a 100k-document index: `htp add` of 10 new documents and `htp delete`
of 10, as a command (a new process: Python, torch and the model start each time), as a command that asks a running
`htp serve` (`--server`: the service's model is loaded, the command starts no torch) and in a process whose encoder
is loaded (as `htp serve` runs POST /documents), against `htp build` over the same records with every vector
already stored (a rebuild that encodes nothing), with calibration off and with it on (its pseudo-queries'
vectors cached by an earlier build, so it encodes nothing either; a change keeps the calibration it finds), the
calibrated one also as a command, the fair baseline of a change run as a command. The
corpus is the sample corpus's documents repeated under new ids; their stored vectors are random unit vectors of
the model's width (search quality is not measured here, only the work a change does); the added documents are
encoded for real.

    python -m benchmarks.changes [--count 100000] [--factories "Flat;IVF1024,Flat;HNSW32"] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from benchmarks.harness.report import write_report
from benchmarks.harness.serving import serving
from htp import HTPEncoder
from pipeline.config import Config
from pipeline.ingest.builder import build
from pipeline.ingest.changes import add, delete
from pipeline.ingest.context import shard_store
from pipeline.ingest.shards import document_keys


def corpus(path: Path, count: int) -> list[dict]:
    """`count` records made from the sample corpus, each with its own id and a line naming its copy."""
    sample = [json.loads(line) for line in Path("data/sample/corpus.jsonl").read_text().splitlines()]
    rows = [
        {**sample[i % len(sample)], "_id": f"c{i}", "text": sample[i % len(sample)]["text"] + f"\nCopy {i}."}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def store_vectors(config: Config, index_dir: Path, rows: list[dict], dimension: int) -> None:
    """Random unit vectors for every record, stored as a build would have stored them."""
    store = shard_store(config, index_dir)
    rng = np.random.default_rng(0)
    for start in range(0, len(rows), config.index.shard_size):
        batch = rows[start : start + config.index.shard_size]
        ids = [row["_id"] for row in batch]
        keys = document_keys(ids, [row.get("title", "") for row in batch], [row["text"] for row in batch])
        vectors = rng.normal(size=(len(batch), dimension)).astype(np.float32)
        store.write(ids, keys, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def timed(run) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--factories", default="Flat;IVF1024,Flat", help="index factories, separated by ;")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/changes.md"))
    args = parser.parse_args(argv)
    factories = [f for f in args.factories.split(";") if f]
    base = Config.load("config.yaml")
    folder = Path(f"runs/changes-{args.count}")
    folder.mkdir(parents=True, exist_ok=True)
    rows = corpus(folder / "corpus.jsonl", args.count)
    encoder = HTPEncoder(base.encoder)
    results = []
    for factory in factories:
        config = replace(base, index=replace(base.index, factory=factory))
        index_dir = folder / factory.replace(",", "_")
        store_vectors(config, index_dir, rows, encoder.dimension)
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(config.to_dict()))
        first = build(config, folder / "corpus.jsonl", index_dir, encoder=encoder, allow_foreign=True)
        assert first.encoded == 0, "every vector should have been stored"
        plain = replace(config, index=replace(config.index, calibrate=False))
        rebuilds = {
            "calibration off": timed(lambda: build(plain, folder / "corpus.jsonl", index_dir, encoder=encoder)),
            "calibration on": timed(lambda: build(config, folder / "corpus.jsonl", index_dir, encoder=encoder)),
        }
        fresh = iter(range(10**6))

        def new_records() -> Path:
            batch = [{**rows[i % len(rows)], "_id": f"new{next(fresh)}"} for i in range(10)]
            path = folder / "add.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in batch))
            return path

        def command(*words: str) -> None:
            subprocess.run([sys.executable, "-m", "pipeline.cli", *words], check=True, capture_output=True)

        # A command's fair baseline is the rebuild as a command too: the same process start, imports and reading.
        rebuilds["calibration on, command"] = timed(
            lambda: command(
                "build", "--input", str(folder / "corpus.jsonl"), "--out", str(index_dir), "--config", str(config_path)
            )
        )

        live = iter(range(args.count))
        timings: dict[str, list[float]] = {
            name: []
            for change in ("add", "delete")
            for name in (f"{change}, command", f"{change}, command --server", f"{change}, loaded")
        }
        for _ in range(args.repeats):
            path = new_records()
            timings["add, command"].append(
                timed(lambda p=path: command("add", str(index_dir), str(p), "--config", str(config_path)))
            )
            path = new_records()
            timings["add, loaded"].append(timed(lambda p=path: add(index_dir, p, config, encoder)))
            ids = [f"c{next(live)}" for _ in range(10)]
            timings["delete, command"].append(
                timed(lambda i=ids: command("delete", str(index_dir), *i, "--config", str(config_path)))
            )
            ids = [f"c{next(live)}" for _ in range(10)]
            timings["delete, loaded"].append(timed(lambda i=ids: delete(index_dir, i, config)))
        with serving(index_dir, "--config", str(config_path)) as url:
            for _ in range(args.repeats):
                path = new_records()
                timings["add, command --server"].append(
                    timed(lambda p=path: command("add", "-", str(p), "--server", url))
                )
                ids = [f"c{next(live)}" for _ in range(10)]
                timings["delete, command --server"].append(
                    timed(lambda i=ids: command("delete", "-", *i, "--server", url))
                )
        for name, seconds in timings.items():
            median = statistics.median(seconds)
            results.append(
                {
                    "index": factory,
                    "change": name,
                    "median_s": median,
                    "rebuild_s": rebuilds,
                    "share": {label: median / full for label, full in rebuilds.items()},
                }
            )
            print(results[-1], flush=True)
    lines = [
        f"Live changes of 10 documents against `htp build` over the same {args.count:,} records with every vector "
        f"stored (it encodes nothing; one run each), {encoder.dimension}-d vectors; changes: medians of "
        f"{args.repeats}. "
        "'command' runs `htp add`/`htp delete` as a new process (Python, torch and the model load each time); "
        "'command --server' runs the command against a running `htp serve` (its start-up not counted); "
        "'loaded' calls pipeline.ingest.changes with the encoder loaded, as `htp serve` does for POST /documents.",
        "",
        "'rebuild as a command' is `htp build` (calibration on) run the same way, as a new process: the fair baseline "
        "of a change run as a command.",
        "",
        "| index | change | median s | rebuild s, calibration off / on / on as a command | share of the rebuild, "
        "off / on | share of the rebuild as a command |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        full, share = r["rebuild_s"], r["share"]
        as_command = f"{100 * share['calibration on, command']:.1f}%" if r["change"].endswith("command") else "–"
        lines.append(
            f"| {r['index']} | {r['change']} | {r['median_s']:.2f} | {full['calibration off']:.1f} / "
            f"{full['calibration on']:.1f} / {full['calibration on, command']:.1f} | "
            f"{100 * share['calibration off']:.1f}% / {100 * share['calibration on']:.1f}% | {as_command} |"
        )
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
