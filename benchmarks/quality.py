"""Does HTP beat the baselines here? All five methods (plus BM25 and hybrid) on every evaluation set.

Short-document sets: every BEIR folder in ../shared/data, on the test half of its judged queries (the dev
half chose the settings, see benchmarks/sweep_layers.py). Long-document sets: LongEmbed-style passkey and
needle tasks generated from CISI text at several lengths and depths, one corpus per task.
Everything goes through `htp eval`'s stages; results land in benchmarks/results/quality.{md,json,png}.

    python -m benchmarks.quality
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.harness.report import write_report
from benchmarks.harness.tasks import synthetic_sets
from htp import METHODS
from pipeline.config import Config
from pipeline.evaluation.beir import load_beir, split_queries
from pipeline.evaluation.evaluate import EvalRequest, run_eval

MODES = ("dense", "bm25", "hybrid")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    parser.add_argument("--lengths", default="256,1024,2048")
    parser.add_argument("--depths", default="0,0.5,1")
    parser.add_argument("--per-cell", type=int, default=2)
    parser.add_argument("--long-max-length", type=int, default=4200, help="encoder.max_length for the long sets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    config = Config.load(args.config)
    results = {}
    for folder in sorted(p for p in args.data.iterdir() if (p / "corpus.jsonl").is_file()):
        _, test = split_queries(load_beir(folder), args.seed)
        request = EvalRequest(
            dataset=folder,
            methods=METHODS,
            out=args.work,
            modes=MODES,
            query_ids=test.judged_query_ids(),
            name=f"{folder.name}-test",
        )
        results[request.name] = ("short", run_eval(config, request))
    long_config = replace(config, encoder=replace(config.encoder, max_length=args.long_max_length))
    tasks = synthetic_sets(
        args.data / "cisi",
        args.work / "synthetic",
        [int(x) for x in args.lengths.split(",")],
        [float(x) for x in args.depths.split(",")],
        args.per_cell,
        args.seed,
    )
    for task, folder in tasks.items():
        request = EvalRequest(dataset=folder, methods=METHODS, out=args.work, modes=MODES, name=task)
        results[task] = ("long", run_eval(long_config, request))
    write(args.out, results, time.perf_counter() - began)


def write(out: Path, results: dict, seconds: float) -> None:
    """One table: NDCG@10 per method per set, short and long averages, and the HTP minus vanilla-mean margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    columns = list(next(iter(results.values()))[1]["results"])
    table = {name: {c: 100 * r["results"][c]["ndcg@10"] for c in columns} for name, (_, r) in results.items()}
    lines = [
        "| set | kind | queries | " + " | ".join(columns) + " | htp - vanilla-mean |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for name, (kind, r) in results.items():
        row = table[name]
        lines.append(
            f"| {name} | {kind} | {r['queries']} | "
            + " | ".join(f"{row[c]:.2f}" for c in columns)
            + f" | {row['htp'] - row['vanilla-mean']:+.2f} |"
        )
    for kind in ("short", "long"):
        names = [n for n, (k, _) in results.items() if k == kind]
        if names:
            means = {c: statistics.fmean(table[n][c] for n in names) for c in columns}
            lines.append(
                f"| average ({kind}) | {kind} | | "
                + " | ".join(f"{means[c]:.2f}" for c in columns)
                + f" | {means['htp'] - means['vanilla-mean']:+.2f} |"
            )
    write_report(
        out.with_suffix(".md"),
        [f"NDCG@10 x100; {seconds / 60:.0f} min on this machine's CPU.", "", *lines],
        {"seconds": seconds, "ndcg@10": table, "full": {n: r for n, (_, r) in results.items()}},
    )
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(columns)
    names = list(table)
    colors = plt.get_cmap("tab20").colors
    for i, column in enumerate(columns):
        ax.bar(
            [x + i * width for x in range(len(names))],
            [table[n][column] for n in names],
            width,
            label=column,
            color=colors[i % len(colors)],
        )
    ax.set_xticks([x + width * (len(columns) - 1) / 2 for x in range(len(names))], names)
    ax.set_ylabel("NDCG@10 (x100)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
