"""Choose K (sentences per block) and the adaptive-K cap for long documents, on development sets.

The development sets are passkey and needle tasks generated with another seed (1) than the ones the
quality benchmark reports on (seed 0), so the choice never sees the reported data.

    python -m benchmarks.sweep_blocks
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.harness.report import write_report
from benchmarks.harness.tasks import synthetic_sets
from pipeline.config import Config
from pipeline.evaluation.evaluate import EvalRequest, run_eval

SETTINGS = {
    "K=1": dict(block_mode="sentences", sentences_per_block=1),
    "K=2": dict(block_mode="sentences", sentences_per_block=2),
    "K=4": dict(block_mode="sentences", sentences_per_block=4),
    "adaptive, max 16 blocks": dict(block_mode="adaptive", sentences_per_block=1, max_blocks=16),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--work", type=Path, default=Path("runs/sweep_blocks"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_blocks.md"))
    parser.add_argument("--lengths", default="256,1024,2048")
    parser.add_argument("--max-length", type=int, default=4200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    base = Config.load(args.config)
    tasks = synthetic_sets(
        args.data / "cisi",
        args.work / "synthetic",
        [int(x) for x in args.lengths.split(",")],
        [0.0, 0.5, 1.0],
        2,
        args.seed,
    )
    table: dict[str, dict[str, float]] = {}
    for name, overrides in SETTINGS.items():
        config = replace(base, encoder=replace(base.encoder, method="htp", max_length=args.max_length, **overrides))
        for task, folder in tasks.items():
            result = run_eval(
                config, EvalRequest(dataset=folder, methods=["htp"], out=args.work / name.replace(" ", "_"), name=task)
            )
            table.setdefault(name, {})[task] = 100 * result["results"]["htp"]["ndcg@10"]
    lines = [
        f"HTP NDCG@10 x100 on development passkey/needle sets (seed {args.seed}); {time.perf_counter() - began:.0f} s.",
        "",
        "| blocks | " + " | ".join(tasks) + " | mean |",
        "|---" * (len(tasks) + 2) + "|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{row[t]:.2f}" for t in tasks) + f" | {sum(row.values()) / len(row):.2f} |"
        )
    write_report(args.out, lines, table)


if __name__ == "__main__":
    main()
