"""Long pages: a page's own vector, its sentence windows, or both at once, by document length.

One vector per page loses what lies past max_length; sentence windows keep it but lose on short pages. Here
every page keeps its own vector (max_length as configured) and a page longer than max_length also gets its
sentence windows of at most `--window` tokens; a document scores the best of its vectors. Scorings of the same
vectors: page (one vector each), windows (a long page by its windows only), both (a long page by the best of its
vector and its windows), and both with each window's cosine lowered by an offset. Dense (corpus-mean centred,
no calibration: this compares layouts) and score fusion with BM25 at a fixed dense weight, NDCG@10 x100, overall
and by the median length (words) of each query's relevant documents. The queries are split in two halves
(seeded): a layout chosen on one half is reported on the other, so the choice is not tuned on the queries it is
scored on. What `index.window_tokens` with `index.page_vector` builds (that truncation, not token count, marks a
long page there is the one difference).

    python -m benchmarks.page_windows [--data ../shared/data] [--collections manpages-3,cisi] [--window 256]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.cache import cached_exit
from benchmarks.harness.report import cpu_name, write_report
from benchmarks.harness.tasks import length_buckets, scores_by_bucket
from htp import EncoderConfig, HTPEncoder
from indexes.lexical import build_bm25, search_bm25
from pipeline.evaluation.beir import load_beir
from pipeline.query.fusion import FusionChoice, fuse
from pipeline.records import full_text
from pipeline.vectors import prepare

DEPTH = 100


def best_per_document(scores: np.ndarray, owners: np.ndarray, documents: int) -> np.ndarray:
    """[q, documents] the best score of each document's rows, from [q, rows] scores and each row's document."""
    best = np.full((scores.shape[0], documents), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owners, scores.T)
    return best


def collection_rows(args: argparse.Namespace, folder: Path, encoder: HTPEncoder, windower: HTPEncoder) -> list[dict]:
    """Rows per (layout, mode, query half) for one collection."""
    data = load_beir(folder)
    ids = list(data.corpus)
    texts = [full_text(data.corpus[d].get("title"), data.corpus[d]["text"]) for d in ids]
    words = {d: len(t.split()) for d, t in zip(ids, texts)}
    qids = data.judged_query_ids()
    began = time.perf_counter()
    pages = cached_exit(args.cache, folder.name, texts, encoder, "document")
    page_seconds = time.perf_counter() - began
    lengths = [len(t) for t in encoder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > encoder.config.max_length]
    windows = windower.windows([texts[i] for i in long], args.window)
    owners = np.array([long[j] for j, parts in enumerate(windows) for _ in parts], dtype=np.int64)
    began = time.perf_counter()
    flat = [part for parts in windows for part in parts]
    window_vectors = (
        cached_exit(args.cache, f"{folder.name}-windows{args.window}", flat, windower, "document")
        if flat
        else np.empty((0, pages.shape[1]), np.float32)
    )
    window_seconds = time.perf_counter() - began
    queries = cached_exit(args.cache, folder.name, [data.queries[q] for q in qids], encoder, "query")
    is_long = np.zeros(len(ids), dtype=bool)
    is_long[long] = True
    both = (np.concatenate([pages, window_vectors]), np.concatenate([np.arange(len(ids)), owners]))
    is_window = np.concatenate([np.zeros(len(ids)), np.ones(len(window_vectors))]).astype(np.float32)
    rows_of = {  # layout -> (vectors, each row's document, each row's score offset)
        "page": (pages, np.arange(len(ids)), 0.0),
        "windows": (
            np.concatenate([pages[~is_long], window_vectors]),
            np.concatenate([np.flatnonzero(~is_long), owners]),
            0.0,
        ),
        "both": (*both, 0.0),
        **{f"both, windows -{offset:g}": (*both, offset * is_window) for offset in args.offsets},
    }
    bm25_scores, bm25_rows = search_bm25(build_bm25(texts), [data.queries[q] for q in qids], DEPTH)
    lexical = [[(ids[r], float(s)) for r, s in zip(rr, ss) if r >= 0] for rr, ss in zip(bm25_rows, bm25_scores)]
    halves = {
        "A": [q for q in qids if int(hashlib.sha256(f"{args.seed}:{q}".encode()).hexdigest(), 16) % 2 == 0],
        "B": [q for q in qids if int(hashlib.sha256(f"{args.seed}:{q}".encode()).hexdigest(), 16) % 2 == 1],
        "all": qids,
    }
    runs: dict[str, dict] = {}
    for layout, (vectors, owner, offset) in rows_of.items():
        center = vectors.mean(axis=0)
        products = prepare(queries, center) @ prepare(vectors, center).T - offset
        scores = best_per_document(products, owner, len(ids))
        top = np.argsort(-scores, axis=1)[:, :DEPTH]
        dense = [[(ids[j], float(scores[i, j])) for j in top[i]] for i in range(len(qids))]
        runs[f"{layout}|dense"] = {q: dict(d) for q, d in zip(qids, dense)}
        runs[f"{layout}|hybrid score w={args.dense_weight}"] = {
            q: dict(fuse(d, b, FusionChoice("score", args.dense_weight), DEPTH))
            for q, d, b in zip(qids, dense, lexical)
        }
    runs["-|bm25"] = {q: dict(b) for q, b in zip(qids, lexical)}
    shape = {"collection": folder.name, "documents": len(ids), "long pages": len(long), "windows": len(flat)}
    seconds = {"page encode s": round(page_seconds, 1), "window encode s": round(window_seconds, 1)}
    return [
        {
            **shape,
            "layout": name.split("|")[0],
            "mode": name.split("|")[1],
            "queries": half,
            "n queries": len(chosen),
            **seconds,
            **scores_by_bucket({q: data.qrels[q] for q in chosen}, {q: run[q] for q in chosen}, words),
        }
        for name, run in runs.items()
        for half, chosen in halves.items()
    ]


def held_out(rows: list[dict]) -> list[str]:
    """For each collection and mode: the layout the better on one query half, and its score on the other."""
    lines = [
        "| collection | mode | chosen on A -> NDCG on B | chosen on B -> NDCG on A | page on B / A |",
        "|---" * 5 + "|",
    ]
    keys = sorted({(r["collection"], r["mode"]) for r in rows if r["layout"] != "-"})
    for collection, mode in keys:
        score = {
            (r["layout"], r["queries"]): r["all"] for r in rows if (r["collection"], r["mode"]) == (collection, mode)
        }
        cells = []
        for chose, report in (("A", "B"), ("B", "A")):
            layout = max(sorted({name for name, _ in score}), key=lambda name: score[(name, chose)])
            cells.append(f"{layout} -> {score[(layout, report)]:.2f}")
        page = f"{score[('page', 'B')]:.2f} / {score[('page', 'A')]:.2f}"
        lines.append(f"| {collection} | {mode} | {cells[0]} | {cells[1]} | {page} |")
    return lines


def table(rows: list[dict]) -> list[str]:
    """One Markdown row per (collection, mode, layout) over all queries, buckets from shortest to longest."""
    buckets = length_buckets(rows)
    lines = [
        "| collection | long pages (windows) | mode | layout | all | A / B | "
        + " | ".join(f"{b} words (n)" for b in buckets)
        + " |",
        "|---" * (len(buckets) + 6) + "|",
    ]
    halves = {(r["collection"], r["mode"], r["layout"], r["queries"]): r["all"] for r in rows}
    for r in rows:
        if r["queries"] != "all":
            continue
        key = (r["collection"], r["mode"], r["layout"])
        cells = [f"{r[b]:.2f} ({r[f'n {b}']})" if b in r else "" for b in buckets]
        lines.append(
            f"| {r['collection']} ({r['documents']}) | {r['long pages']} ({r['windows']}) | {r['mode']} | "
            f"{r['layout']} | {r['all']:.2f} | {halves[(*key, 'A')]:.2f} / {halves[(*key, 'B')]:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Encode pages and the windows of long pages once per collection, score every layout, print and write."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--collections", default="manpages-3,cisi")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache/page_windows"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/page_windows.md"))
    parser.add_argument("--model", default=EncoderConfig().model)
    parser.add_argument("--window", type=int, default=256, help="tokens per sentence window of a long page")
    parser.add_argument("--dense-weight", type=float, default=0.3, help="dense weight of the score fusion row")
    parser.add_argument(
        "--offsets",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.05, 0.1, 0.2],
        help="also score 'both' with the windows' cosines lowered by each of these (a long page's windows are many "
        "draws against its one vector)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    encoder = HTPEncoder(EncoderConfig(model=args.model))
    # room for the placeholders HTP adds around a full window, as benchmarks.long_documents gives them
    windower = HTPEncoder(EncoderConfig(model=args.model, max_length=2 * args.window), encoder.model, encoder.tokenizer)
    rows = [
        row
        for name in args.collections.split(",")
        for row in collection_rows(args, args.data / name, encoder, windower)
    ]
    header = (
        f"Long pages as one vector, as sentence windows of <= {args.window} tokens, or both (a long page scores the "
        f"best of them); {args.model} HTP at max_length {encoder.config.max_length}, {encoder.dtype}, "
        f"{cpu_name()}; NDCG@10 x100; {(time.perf_counter() - began) / 60:.0f} min. A long page is one of more than "
        "max_length tokens; halves A and B split the queries (seeded)."
    )
    lines = [
        header,
        "",
        *table(rows),
        "",
        "Layout chosen on one half of the queries, reported on the other:",
        "",
        *held_out(rows),
    ]
    print("\n".join(lines))
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
