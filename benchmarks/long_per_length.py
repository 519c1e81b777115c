"""Long-document passkey and needle scored one length at a time, as LongEmbed does.

benchmarks/quality.py puts every length of a task in one corpus, so long documents also compete with short
ones. Here each (task, length) is its own corpus: every candidate has the same length, and the question is
only whether the method finds the planted sentence at that length. Dense retrieval, every method, the
default settings; chance is the NDCG@10 of a random ranking with one relevant document among the corpus.

    python -m benchmarks.long_per_length
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.harness.report import write_report
from benchmarks.harness.tasks import task_folders
from htp import METHODS
from pipeline.config import Config
from pipeline.evaluation.beir import load_beir
from pipeline.evaluation.evaluate import EvalRequest, run_eval


def chance_ndcg(n_docs: int, k: int = 10) -> float:
    """Expected NDCG@k x100 of a uniformly random ranking when exactly one of n_docs is relevant."""
    return 100 * sum(1 / math.log2(rank + 1) for rank in range(1, min(k, n_docs) + 1)) / n_docs


def main(argv: list[str] | None = None) -> None:
    """Generate per-length sets, evaluate every method on each, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--work", type=Path, default=Path("runs/long_per_length"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/long_per_length.md"))
    parser.add_argument("--lengths", default="256,1024")
    parser.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--per-cell", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=2200, help="encoder.max_length for these sets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    base = Config.load(args.config)
    config = replace(base, encoder=replace(base.encoder, max_length=args.max_length))
    lengths, depths = [int(x) for x in args.lengths.split(",")], [float(x) for x in args.depths.split(",")]
    rows = []
    for task, folders in task_folders(args.data / "cisi", args.work, lengths, depths, args.per_cell, args.seed).items():
        for length, folder in sorted(folders.items()):
            result = run_eval(
                config, EvalRequest(dataset=folder, methods=METHODS, out=args.work / "eval", name=f"{task}-{length}")
            )
            scores = {m: 100 * result["results"][m]["ndcg@10"] for m in METHODS}
            rows.append(
                {
                    "task": task,
                    "length": length,
                    "queries": result["queries"],
                    "chance": chance_ndcg(len(load_beir(folder).corpus)),
                    **scores,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"Dense NDCG@10 x100, one corpus per task and length (seed {args.seed}, {args.per_cell} per depth, "
        f"depths {args.depths}); {time.perf_counter() - began:.0f} s.",
        "",
        "| task | tokens | queries | chance | " + " | ".join(METHODS) + " | htp - vanilla-mean |",
        "|---" * (len(METHODS) + 5) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['length']} | {r['queries']} | {r['chance']:.1f} | "
            + " | ".join(f"{r[m]:.2f}" for m in METHODS)
            + f" | {r['htp'] - r['vanilla-mean']:+.2f} |"
        )
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
