"""`htp eval`: build each method's index through the build stages, search, score, write JSON, Markdown and a plot."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import Config
from pipeline.evaluation.beir import BeirData, load_beir, sample_queries
from pipeline.evaluation.metrics import evaluate_run
from pipeline.evaluation.trained import is_trained, trained_rankings
from pipeline.ingest.builder import build
from pipeline.query.modes import search_mode
from pipeline.query.searcher import Searcher
from pipeline.records import full_text

LENGTH_BUCKETS = (128, 256, 512, 1024)  # words; a query falls in the bucket of its relevant documents' median length
DEPTH = 100

log = logging.getLogger(__name__)


@dataclass
class EvalRequest:
    """What to evaluate: a BEIR folder, methods, search modes, and where results go."""

    dataset: Path
    methods: Sequence[str]
    out: Path
    split: str = "test"
    modes: Sequence[str] = ("dense",)
    factory: str = "Flat"
    sample_queries: int | None = None
    seed: int = 0
    ignore_identical_ids: bool = False
    query_ids: Sequence[str] | None = None
    name: str | None = None


def bucket_name(words: float) -> str:
    """Label of the length bucket a word count falls in."""
    low = 0
    for edge in LENGTH_BUCKETS:
        if words < edge:
            return f"{low}-{edge}"
        low = edge
    return f">={low}"


def query_buckets(data: BeirData, query_ids: Sequence[str]) -> dict[str, str]:
    """Each query's length bucket, by the median word count of its relevant documents."""
    out = {}
    for qid in query_ids:
        lengths = [
            len(data.corpus[d]["text"].split()) for d, rel in data.qrels[qid].items() if rel > 0 and d in data.corpus
        ]
        out[qid] = bucket_name(statistics.median(lengths)) if lengths else "none"
    return out


def _score(
    data: BeirData,
    query_ids: Sequence[str],
    ranked: list[list[tuple[str, float]]],
    request: EvalRequest,
    buckets: dict[str, str],
) -> dict:
    run = {qid: {doc: float(score) for doc, score in hits} for qid, hits in zip(query_ids, ranked)}
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    scores = evaluate_run(qrels, run, ignore_identical_ids=request.ignore_identical_ids)
    per_query = scores.pop("per_query")
    by_bucket: dict[str, list[float]] = {}
    for qid, value in per_query.items():
        by_bucket.setdefault(buckets[qid], []).append(value)
    scores["ndcg@10_by_length"] = {b: statistics.fmean(v) for b, v in sorted(by_bucket.items())}
    scores["queries"] = len(query_ids)
    return scores


def run_eval(config: Config, request: EvalRequest) -> dict:
    """Evaluate every (method, mode); returns and writes the results."""
    data = load_beir(request.dataset, request.split)
    if request.sample_queries:
        data = sample_queries(data, request.sample_queries, request.seed)
    query_ids = list(request.query_ids) if request.query_ids is not None else data.judged_query_ids()
    query_texts = [data.queries[q] for q in query_ids]
    buckets = query_buckets(data, query_ids)
    name = request.name or request.dataset.name
    rows: dict[str, dict] = {}
    for method in request.methods:
        if is_trained(method):  # a trained sentence encoder's reference rows, beside HTP's
            doc_ids = list(data.corpus)
            texts = [full_text(data.corpus[d].get("title"), data.corpus[d]["text"]) for d in doc_ids]
            ranked = trained_rankings(method, doc_ids, texts, query_texts, request.modes, DEPTH)
            for mode, rankings in ranked.items():
                label = search_mode(mode).label_for(method)
                if label not in rows:
                    rows[label] = _score(data, query_ids, rankings, request, buckets)
                    log.info(f"eval {name}: {label}: NDCG@10 {100 * rows[label]['ndcg@10']:.2f}")
            continue
        lexical = any(search_mode(mode).needs_bm25 for mode in request.modes)
        method_config = replace(
            config,
            encoder=replace(config.encoder, method=method),
            index=replace(config.index, factory=request.factory, bm25=lexical),
        )
        index_dir = request.out / "indexes" / name / method
        build(method_config, request.dataset, index_dir)
        searcher = Searcher(index_dir, method_config)
        for mode in request.modes:
            label = search_mode(mode).label_for(method)
            if label in rows:
                continue
            rows[label] = _score(data, query_ids, searcher.rankings(query_texts, DEPTH, mode), request, buckets)
            log.info(f"eval {name}: {label}: NDCG@10 {100 * rows[label]['ndcg@10']:.2f} over {len(query_ids)} queries")
    results = {
        "dataset": name,
        "split": request.split,
        "queries": len(query_ids),
        "problems": data.problems,
        "factory": request.factory,
        "encoder": config.encoder.to_dict(),
        "results": rows,
    }
    write_results(results, request.out / name)
    return results


def markdown_table(results: dict) -> str:
    """NDCG@10, Recall@10/100, MRR@10 (x100) per method, then NDCG@10 per length bucket."""
    rows = results["results"]
    lines = [
        f"### {results['dataset']} ({results['queries']} queries, split {results['split']})",
        "",
        "| method | NDCG@10 | Recall@10 | Recall@100 | MRR@10 |",
        "|---|---|---|---|---|",
    ]
    for label, s in rows.items():
        lines.append(
            f"| {label} | {100 * s['ndcg@10']:.2f} | {100 * s['recall@10']:.2f} | {100 * s['recall@100']:.2f} | "
            f"{100 * s['mrr@10']:.2f} |"
        )
    buckets = sorted({b for s in rows.values() for b in s["ndcg@10_by_length"]}, key=lambda b: (len(b), b))
    lines += [
        "",
        "| method | " + " | ".join(f"NDCG@10 {b} words" for b in buckets) + " |",
        "|---" * (len(buckets) + 1) + "|",
    ]
    for label, s in rows.items():
        cells = [f"{100 * s['ndcg@10_by_length'][b]:.2f}" if b in s["ndcg@10_by_length"] else "" for b in buckets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Bar chart of NDCG@10 per method, overall and per length bucket."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    labels = list(rows)
    buckets = ["all"] + sorted({b for s in rows.values() for b in s["ndcg@10_by_length"]}, key=lambda b: (len(b), b))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(buckets) * len(labels) / 3), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [100 * rows[label]["ndcg@10"]] + [
            100 * rows[label]["ndcg@10_by_length"].get(b, 0.0) for b in buckets[1:]
        ]
        ax.bar([x + i * width for x in range(len(buckets))], values, width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(buckets))], buckets)
    ax.set_ylabel("NDCG@10 (x100)")
    ax.set_xlabel("relevant document length (words)")
    ax.set_title(f"{results['dataset']}: {results['queries']} queries")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: dict, folder: Path) -> None:
    """results.json, results.md and plot.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    (folder / "results.md").write_text(markdown_table(results))
    plot(results, folder / "plot.png")
    log.info(f"eval: wrote {folder}/results.json, results.md, plot.png")
