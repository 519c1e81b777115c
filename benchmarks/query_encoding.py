"""How queries are encoded, measured against the same document vectors: the prompt glued to the query
("Text:how", as before) or separated by a space (the official template), and the query encoder in float32 or
bfloat16 (what `htp serve` can run for speed). Dense and fixed-hybrid NDCG@10 on each half of the judged queries.

    python -m benchmarks.query_encoding --datasets cisi
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.harness.cache import cached_layers
from benchmarks.harness.report import write_report
from htp import EncoderConfig, HTPEncoder
from indexes.lexical import build_bm25, search_bm25
from pipeline.evaluation.beir import load_beir, split_queries
from pipeline.evaluation.metrics import evaluate_run
from pipeline.query.fusion import FusionChoice, fuse
from pipeline.records import full_text
from pipeline.vectors import prepare

DEPTH = 100
HYBRID = FusionChoice("rrf", 0.25)


def rankings(queries: np.ndarray, docs: np.ndarray) -> list[list[tuple[int, float]]]:
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]
    return [[(int(r), float(scores[i, r])) for r in row] for i, row in enumerate(top)]


def report(rows: list[dict], seed: int, out: Path) -> None:
    """Write the table (.md) and the rows (.json)."""
    lines = [
        f"Default encoder (HTP, SmolLM2-135M), documents in float32, centred; hybrid = RRF with dense weight "
        f"{HYBRID.dense_weight} and BM25 (no calibration). NDCG@10 x100 on the seed-{seed} halves of the judged "
        "queries.",
        "",
        "| dataset | query encoding | dense dev | dense test | dense all | hybrid dev | hybrid test | hybrid all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['queries']} | "
        + " | ".join(f"{r[m][h]:.2f}" for m in ("dense", "hybrid") for h in ("dev", "test", "all"))
        + " |"
        for r in rows
    ]
    write_report(out, lines, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", default="cisi")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/query_encoding.md"))
    args = parser.parse_args(argv)
    base = HTPEncoder(EncoderConfig())
    variants = {
        "glued prompt, float32": HTPEncoder(replace(base.config, separate_prompt=False), base.model, base.tokenizer),
        "separated prompt, float32": base,
        "separated prompt, bfloat16": HTPEncoder(replace(base.config, dtype="bfloat16")),
    }
    layer = base.layers_run - 1
    rows = []
    for name in args.datasets.split(","):
        data = load_beir(args.data / name)
        doc_ids = list(data.corpus)
        texts = [full_text(data.corpus[d].get("title"), data.corpus[d]["text"]) for d in doc_ids]
        query_ids = data.judged_query_ids()
        dev, test = split_queries(data, args.seed)
        halves = {"dev": dev.judged_query_ids(), "test": test.judged_query_ids(), "all": query_ids}
        raw = np.asarray(cached_layers(args.cache, name, texts, base.config, "document", base)[layer])
        center = raw.mean(axis=0)
        docs = prepare(raw, center)
        questions = [data.queries[q] for q in query_ids]
        scores, hits = search_bm25(build_bm25(texts), questions, DEPTH)
        bm25 = [[(int(r), float(s)) for r, s in zip(rr, sr) if r >= 0] for rr, sr in zip(hits, scores)]

        def ndcg(ranked: list[list[tuple[int, float]]]) -> dict[str, float]:
            run = {q: {doc_ids[r]: s for r, s in ranking} for q, ranking in zip(query_ids, ranked)}
            return {
                half: 100 * evaluate_run({q: data.qrels[q] for q in ids}, {q: run[q] for q in ids})["ndcg@10"]
                for half, ids in halves.items()
            }

        for label, encoder in variants.items():
            dense = rankings(prepare(encoder.encode(questions, kind="query"), center), docs)
            rows.append(
                {
                    "dataset": name,
                    "queries": label,
                    "dense": ndcg(dense),
                    "hybrid": ndcg([fuse(d, b, HYBRID, DEPTH) for d, b in zip(dense, bm25)]),
                }
            )
            print(rows[-1], flush=True)
    report(rows, args.seed, args.out)


if __name__ == "__main__":
    main()
