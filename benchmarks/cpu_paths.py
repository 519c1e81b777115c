"""The encoder's two CPU memory and attention settings side by side: `encoder.reuse_memory` (freed buffers kept in
malloc's heap, process-wide, so each variant runs in a fresh process) and `encoder.attention_products` (attention
as two bfloat16 products), each on and off, the variants' processes alternating over rounds; documents/s of CISI
abstracts (or another folder's corpus.jsonl) and a lone query's milliseconds (medians), the cosine of each variant's
vectors to the first's, and the minor page faults and peak memory of each process.

    python -m benchmarks.cpu_paths --dataset ../shared/data/cisi --docs 120 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness.report import cpu_name, write_report

VARIANTS = {  # name -> (reuse_memory, attention_products)
    "both on (default)": (True, True),
    "products only": (False, True),
    "heap only": (True, False),
    "both off (before)": (False, False),
}

ONE_RUN = """
import json, resource, sys, time
import numpy as np
from htp import EncoderConfig, HTPEncoder
from pipeline.records import full_text
model, dtype, reuse, products, docs_file, out = sys.argv[1:]
rows = [json.loads(line) for line in open(docs_file)]
docs = [full_text(row.get("title"), row["text"]) for row in rows]
encoder = HTPEncoder(EncoderConfig(model=model, dtype=dtype, device="cpu", reuse_memory=reuse == "1",
                                   attention_products=products == "1"))
encoder.encode(docs[:8], show_progress=False)  # warm-up: spaCy, kernels
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
began = time.perf_counter()
vectors = encoder.encode(docs, show_progress=False)
seconds = time.perf_counter() - began
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
query_ms = []
for query in QUERIES * 3:
    began = time.perf_counter()
    encoder.encode([query], kind="query", show_progress=False)
    query_ms.append(1000 * (time.perf_counter() - began))
np.save(out + ".npy", vectors)
summary = {"seconds": seconds, "faults": faults, "query_ms": sorted(query_ms)[len(query_ms) // 2],
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
open(out + ".json", "w").write(json.dumps(summary))
"""


def run(model: str, dtype: str, flags: tuple[bool, bool], docs_file: Path, out: Path) -> dict:
    """One variant in a fresh process: its timings, and its vectors under `out`.npy."""
    reuse, products = (str(int(flag)) for flag in flags)
    subprocess.run([sys.executable, "-c", ONE_RUN, model, dtype, reuse, products, str(docs_file), str(out)], check=True)
    return json.loads(Path(f"{out}.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cisi"))
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_paths.md"))
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        docs_file = Path(folder) / "docs.jsonl"
        lines = (args.dataset / "corpus.jsonl").read_text().splitlines()[: args.docs]
        docs_file.write_text("\n".join(lines) + "\n")
        for round_ in range(args.rounds):
            names = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                out = Path(folder) / f"{list(VARIANTS).index(name)}-{round_}"
                results[name].append(run(args.model, args.dtype, VARIANTS[name], docs_file, out))
                print(name, round_, results[name][-1], flush=True)
        first = np.load(Path(folder) / "0-0.npy")
        cosines = {
            name: float((np.load(Path(folder) / f"{i}-0.npy") * first).sum(1).min()) for i, name in enumerate(VARIANTS)
        }
    base = statistics.median(r["seconds"] for r in results["both off (before)"])
    table = {}
    for name, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        table[name] = {
            "docs_per_s": args.docs / seconds,
            "speed_up": base / seconds,
            "query_ms": statistics.median(r["query_ms"] for r in runs),
            "minor_faults": statistics.median(r["faults"] for r in runs),
            "peak_mb": statistics.median(r["peak_mb"] for r in runs),
            "min_cosine_to_default": cosines[name],
        }
    lines = [
        f"{args.model} in {args.dtype} on {cpu_name()}, the first {args.docs} documents of {args.dataset}, medians "
        f"of {args.rounds} fresh "
        "processes per variant, alternating.",
        "",
        "| variant | documents/s | vs both off | lone query ms | minor page faults (encoding) | peak MB | "
        "min cosine to the default's vectors |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['docs_per_s']:.2f} | {r['speed_up']:.2f}x | {r['query_ms']:.1f} | {r['minor_faults']:,.0f} | "
        f"{r['peak_mb']:,.0f} | {r['min_cosine_to_default']:.6f} |"
        for name, r in table.items()
    ]
    write_report(args.out, lines, {"setup": {key: str(value) for key, value in vars(args).items()}, "results": table})


if __name__ == "__main__":
    main()
