"""Long real documents: HTP against vanilla mean pooling on manpages-3, by document length and max_length.

Dense retrieval (corpus-mean centred, no calibration: this compares encoders), default settings otherwise.
At max_length 512 on the whole corpus; at 512, 2,048 and 4,096 tokens on a length-stratified subset of the
documents (an equal number from each length quartile, seeded), with the queries whose relevant documents are
all in the subset, because 4,096-token forward passes on 2 CPU cores take minutes per hundred documents.
Methods: vanilla-mean, htp with K=1 sentence per block, and on the subset htp with adaptive K (at most
`max_blocks` blocks).
Time and peak memory (the process's maximum RSS, settings run in increasing max_length) are recorded.

    python -m benchmarks.long_documents
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.cache import cached_layers
from benchmarks.harness.report import write_report
from benchmarks.harness.tasks import length_buckets, scores_by_bucket
from htp import EncoderConfig, HTPEncoder
from htp.models import load_model, pick_device
from pipeline.evaluation.beir import load_beir
from pipeline.records import full_text
from pipeline.vectors import prepare

METHODS = {
    "vanilla-mean": dict(method="vanilla-mean"),
    "htp K=1": dict(method="htp"),
    "htp adaptive K": dict(method="htp", block_mode="adaptive"),
}


def table(rows: list[dict]) -> list[str]:
    """Markdown rows: one per (corpus, max_length, method), buckets from shortest to longest."""
    buckets = length_buckets(rows)
    lines = [
        "| corpus | max_length | method | queries | all | "
        + " | ".join(f"{b} words (n)" for b in buckets)
        + " | encode s | peak RSS GB |",
        "|---" * (len(buckets) + 7) + "|",
    ]
    for r in rows:
        cells = [f"{r[b]:.2f} ({r[f'n {b}']})" if b in r else "" for b in buckets]
        lines.append(
            f"| {r['corpus']} ({r['documents']}) | {r['max_length']} | {r['method']} | {r['queries']} | "
            f"{r['all']:.2f} | " + " | ".join(cells) + f" | {r['encode_seconds']} | {r['peak_rss_gb']} |"
        )
    return lines


def window_rows(
    args: argparse.Namespace, data, subset: list[str], texts: dict[str, str], words: dict[str, int], model, tokenizer
) -> list[dict]:
    """Multi-vector rows: each subset document cut into sentence windows (as a window_tokens index does), every
    window encoded with HTP, a document scored by its best window."""
    chosen = set(subset)
    query_ids = [q for q in data.judged_query_ids() if set(data.qrels[q]) <= chosen]
    qrels = {q: data.qrels[q] for q in query_ids}
    rows = []
    for size in (int(n) for n in args.windows.split(",")):
        config = EncoderConfig(max_length=2 * size).resolved()  # room for the placeholders around a full window
        encoder = HTPEncoder(config, model, tokenizer)
        layer = encoder.layers_run - 1
        start = time.perf_counter()
        windows = encoder.windows([texts[d] for d in subset], size)
        owners = np.array([i for i, parts in enumerate(windows) for _ in parts])
        flat = [part for parts in windows for part in parts]
        tag = f"{args.dataset.name}-subset-windows{size}"
        vectors = np.asarray(cached_layers(args.cache, tag, flat, config, "document", encoder)[layer])
        seconds = time.perf_counter() - start
        queries = np.asarray(
            cached_layers(args.cache, tag, [data.queries[q] for q in query_ids], config, "query", encoder)[layer]
        )
        center = vectors.mean(axis=0)
        window_scores = prepare(queries, center) @ prepare(vectors, center).T
        scores = np.full((len(query_ids), len(subset)), -np.inf, dtype=np.float32)
        np.maximum.at(scores.T, owners, window_scores.T)
        top = np.argsort(-scores, axis=1)[:, :100]
        run = {q: {subset[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}
        row = {
            "corpus": "subset",
            "documents": len(subset),
            "queries": len(query_ids),
            "max_length": f"windows of {size}",
            "method": f"htp K=1, {len(flat)} windows",
            "encode_seconds": round(seconds, 1),
            "truncated": encoder.stats.truncated,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            **scores_by_bucket(qrels, run, words),
        }
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/manpages-3"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/long_documents.md"))
    parser.add_argument("--per-quartile", type=int, default=25)
    parser.add_argument("--lengths", default="512,2048,4096")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--windows",
        default="",
        help="instead: multi-vector HTP on the subset, windows of these token sizes (e.g. 256,512)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    data = load_beir(args.dataset)
    ids = list(data.corpus)
    texts = {d: full_text(data.corpus[d].get("title"), data.corpus[d]["text"]) for d in ids}
    words = {d: len(texts[d].split()) for d in ids}
    by_length = sorted(ids, key=lambda d: words[d])
    rng = np.random.default_rng(args.seed)
    subset = sorted(
        d
        for quartile in np.array_split(np.array(by_length), 4)
        for d in rng.choice(quartile, size=min(args.per_quartile, len(quartile)), replace=False)
    )
    chosen = set(subset)
    model, tokenizer = load_model("smollm2-135m", pick_device("cpu"), torch.float32)
    if args.windows:
        rows = window_rows(args, data, subset, texts, words, model, tokenizer)
        header = (
            f"manpages-3 multi-vector HTP (index.window_tokens): dense NDCG@10 x100 on the subset of {len(subset)} "
            f"documents, a document scoring its best window; {(time.perf_counter() - began) / 60:.0f} min."
        )
        write_report(args.out, [header, "", *table(rows)], rows)
        return
    settings = [("all", 512)] + [("subset", int(n)) for n in args.lengths.split(",")]
    rows = []
    for corpus_name, max_length in settings:
        doc_ids = ids if corpus_name == "all" else subset
        query_ids = [q for q in data.judged_query_ids() if corpus_name == "all" or set(data.qrels[q]) <= chosen]
        qrels = {q: data.qrels[q] for q in query_ids}
        for label, overrides in METHODS.items():
            if corpus_name == "all" and overrides.get("block_mode") == "adaptive":
                continue  # at 512 tokens few documents have more than max_blocks sentences: measured on the subset
            config = EncoderConfig(max_length=max_length, **overrides).resolved()
            encoder = HTPEncoder(config, model, tokenizer)
            layer = encoder.layers_run - 1
            start = time.perf_counter()
            tag = args.dataset.name if corpus_name == "all" else f"{args.dataset.name}-subset"
            docs = np.asarray(
                cached_layers(args.cache, tag, [texts[d] for d in doc_ids], config, "document", encoder)[layer]
            )
            seconds = time.perf_counter() - start
            queries = np.asarray(
                cached_layers(args.cache, tag, [data.queries[q] for q in query_ids], config, "query", encoder)[layer]
            )
            center = docs.mean(axis=0)
            scores = prepare(queries, center) @ prepare(docs, center).T
            top = np.argsort(-scores, axis=1)[:, :100]
            run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}
            row = {
                "corpus": corpus_name,
                "documents": len(doc_ids),
                "queries": len(query_ids),
                "max_length": max_length,
                "method": label,
                "encode_seconds": round(seconds, 1),
                "truncated": encoder.stats.truncated,
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                **scores_by_bucket(qrels, run, words),
            }
            rows.append(row)
            print(row, flush=True)
    header = (
        f"manpages-3 dense NDCG@10 x100 by the median length (words) of each query's relevant documents; "
        f"subset: {len(subset)} documents ({args.per_quartile} per length quartile, seed {args.seed}); "
        f"{(time.perf_counter() - began) / 60:.0f} min in all. Encode seconds count only settings not already "
        "cached (0 otherwise)."
    )
    write_report(args.out, [header, "", *table(rows)], rows)


if __name__ == "__main__":
    main()
