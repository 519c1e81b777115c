"""Scaling out: Ray against local encoding, on-disk IVF memory, and incremental rebuilds.

1. Documents/s of the encode stage on the first --docs CISI documents with the default model: a local build,
   and Ray builds with 1 actor (2 CPUs) and 2 actors (1 CPU each) on a local Ray instance started beforehand
   (its start-up is reported apart; actor start-up, which loads the model, is inside each build). Calibration
   and BM25 are off so that the build is the encode stage plus a Flat index.
2. Peak memory of building an IVF1024,Flat index over --vectors synthetic 576-dimensional vectors in memory and
   on disk (indexes.ondisk: parts of --part-rows vectors merged with merge_ondisk), each in a fresh process; the
   vectors are generated batch by batch and never held whole. Peak anonymous memory (RssAnon sampled every
   10 ms) is what the build needs; peak RSS also counts mapped file pages, which are reclaimable cache.
3. A full build of the bundled sample corpus, then the same corpus with 1% of its documents changed (a third
   edited, a third deleted, a third added): build seconds of each, with calibration on (the default) and off.

    python -m benchmarks.scale_out
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.harness.report import write_report

DIM = 576
MEMORY_JOB = """
import resource, sys, threading, time
import numpy as np
from pathlib import Path
from indexes.faiss_index import build_faiss
from indexes.ondisk import build_on_disk
mode, count, part_rows, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
dim, step = {dim}, 50_000
def batches():
    for start in range(0, count, step):
        rng = np.random.default_rng(start)
        v = rng.normal(size=(min(step, count - start), dim)).astype(np.float32)
        yield v / np.linalg.norm(v, axis=1, keepdims=True)
peak = [0]
def sample():  # anonymous memory, which mapped file pages (reclaimable page cache) do not count in
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
train = next(batches())
began = time.perf_counter()
if mode == "memory":
    index = build_faiss("IVF1024,Flat", dim, batches(), train)
else:
    index = build_on_disk("IVF1024,Flat", dim, batches(), train, folder, part_rows)
time.sleep(0.05)
print(index.ntotal, time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      peak[0] / 2**20)
""".replace("{dim}", str(DIM))


def throughput(docs: int, out: Path) -> list[dict]:
    """Build seconds and documents/s: local, Ray with 1 actor x 2 CPUs, Ray with 2 actors x 1 CPU."""
    import ray

    from pipeline.config import Config
    from pipeline.evaluation.beir import load_beir
    from pipeline.ingest.builder import build

    data = load_beir(Path("../shared/data/cisi"))
    corpus = out / "cisi-head.jsonl"
    with corpus.open("w") as f:
        for doc_id in list(data.corpus)[:docs]:
            f.write(json.dumps({"_id": doc_id, **data.corpus[doc_id]}) + "\n")
    base = Config()
    base = replace(base, index=replace(base.index, calibrate=False, bm25=False, factory="Flat"))
    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - began
    settings = {
        "local": base,
        "ray, 1 actor x 2 CPUs": replace(base, engine="ray", ray=replace(base.ray, actors=1, cpus_per_actor=2.0)),
        "ray, 2 actors x 1 CPU": replace(
            base, engine="ray", ray=replace(base.ray, actors=2, cpus_per_actor=1.0, batch_size=64)
        ),
    }
    rows = []
    try:
        for name, config in settings.items():
            folder = out / name.replace(" ", "_").replace(",", "")
            shutil.rmtree(folder, ignore_errors=True)
            started = time.perf_counter()
            summary = build(config, corpus, folder)
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "engine": name,
                    "documents": summary.encoded,
                    "seconds": round(seconds, 1),
                    "documents_per_s": round(summary.encoded / seconds, 2),
                }
            )
            print(rows[-1], flush=True)
    finally:
        ray.shutdown()
    rows.append({"engine": "ray start-up (ray.init, local instance)", "seconds": round(ray_start, 1)})
    return rows


def memory(count: int, part_rows: int, out: Path) -> list[dict]:
    """Peak RSS of an IVF1024,Flat build in memory and on disk, each in a new process."""
    rows = []
    for mode in ("memory", "disk"):
        folder = out / f"ivf-{mode}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        printed = subprocess.run(
            [sys.executable, "-c", MEMORY_JOB, mode, str(count), str(part_rows), str(folder)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-4:]  # FAISS prints too
        rows.append(
            {
                "mode": mode,
                "vectors": int(printed[0]),
                "seconds": round(float(printed[1]), 1),
                "peak_rss_gb": round(float(printed[2]), 2),
                "peak_anonymous_gb": round(float(printed[3]), 2),
            }
        )
        print(rows[-1], flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def changed_corpus(source: Path, target: Path, share: float, seed: int) -> int:
    """`source` with `share` of its documents changed: a third edited, a third deleted, a third new; returns how
    many."""
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    count = max(3, round(share * len(rows)))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=2 * (count // 3), replace=False)
    edit, delete = set(picked[: count // 3].tolist()), set(picked[count // 3 :].tolist())
    out = []
    for i, row in enumerate(rows):
        if i in delete:
            continue
        if i in edit:
            row = {**row, "text": row["text"] + " Edited for the incremental benchmark."}
        out.append(row)
    added = count - 2 * (count // 3)
    out += [{**rows[i], "_id": f"added-{i}", "text": "Added. " + rows[i]["text"]} for i in range(added)]
    target.write_text("".join(json.dumps(r) + "\n" for r in out))
    return count


def incremental(out: Path, share: float) -> list[dict]:
    """Full build and incremental rebuild seconds on the sample corpus, calibration on and off."""
    from pipeline.config import Config
    from pipeline.ingest.builder import build

    source = Path("data/sample/corpus.jsonl")
    changed = out / "sample-changed.jsonl"
    count = changed_corpus(source, changed, share, 0)
    rows = []
    for calibrate in (True, False):
        config = Config()
        config = replace(config, index=replace(config.index, calibrate=calibrate))
        folder = out / f"sample-calibrate-{calibrate}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        full = build(config, source, folder)
        full_s = time.perf_counter() - started
        started = time.perf_counter()
        again = build(config, changed, folder)
        again_s = time.perf_counter() - started
        rows.append(
            {
                "calibrate": calibrate,
                "documents": full.documents,
                "changed": count,
                "full_s": round(full_s, 1),
                "incremental_s": round(again_s, 1),
                "ratio": round(again_s / full_s, 3),
                "encoded": again.encoded,
                "reused": again.reused,
                "dropped": again.dropped,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=150)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--part-rows", type=int, default=50_000)
    parser.add_argument("--share", type=float, default=0.01)
    parser.add_argument("--work", type=Path, default=Path("runs/scale_out"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_out.md"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    speed = throughput(args.docs, args.work)
    rss = memory(args.vectors, args.part_rows, args.work)
    rebuild = incremental(args.work, args.share)
    ratio = rss[1]["peak_anonymous_gb"] / rss[0]["peak_anonymous_gb"]
    lines = [
        f"2 CPU cores, no GPU; {(time.perf_counter() - began) / 60:.0f} min in all.",
        "",
        f"Encode throughput, first {args.docs} CISI documents, default model (build without calibration or BM25):",
        "",
        "| engine | documents | seconds | documents/s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['engine']} | {r.get('documents', '')} | {r['seconds']} | {r.get('documents_per_s', '')} |" for r in speed
    ]
    lines += [
        "",
        f"IVF1024,Flat over {args.vectors:,} synthetic {DIM}-dimensional vectors (on disk: parts of "
        f"{args.part_rows:,}); the on-disk build's peak anonymous memory is {100 * ratio:.0f}% of the in-memory "
        "build's (target <= 30%). Peak RSS also counts the pages of memory-mapped files (parts and lists), "
        "which the kernel reclaims under pressure:",
        "",
        "| build | seconds | peak anonymous memory GB | peak RSS GB |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['mode']} | {r['seconds']} | {r['peak_anonymous_gb']} | {r['peak_rss_gb']} |" for r in rss]
    lines += [
        "",
        f"Rebuild after changing {100 * args.share:g}% of the sample corpus (target <= 5% of a full build):",
        "",
        "| calibration | documents | changed | full build s | incremental s | ratio | encoded / reused / dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {'on' if r['calibrate'] else 'off'} | {r['documents']} | {r['changed']} | {r['full_s']} | "
        f"{r['incremental_s']} | {100 * r['ratio']:.1f}% | {r['encoded']} / {r['reused']} / {r['dropped']} |"
        for r in rebuild
    ]
    write_report(args.out, lines, {"throughput": speed, "memory": rss, "incremental": rebuild})


if __name__ == "__main__":
    main()
