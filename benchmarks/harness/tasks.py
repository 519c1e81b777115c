"""Synthetic long-document tasks (passkey, needle) as BEIR folders, exact dense runs, and NDCG overall and per
length bucket."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from pipeline.evaluation.beir import BeirData, load_beir
from pipeline.evaluation.evaluate import bucket_name
from pipeline.evaluation.metrics import evaluate_run
from pipeline.evaluation.synthetic import make_needle, make_passkey, tokenizer_counter


def merged_task(folders: dict[int, Path], out: Path) -> Path:
    """One BEIR folder holding every length of a synthetic task, ids prefixed with the length."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (
        (out / "corpus.jsonl").open("w") as corpus,
        (out / "queries.jsonl").open("w") as queries,
        (out / "qrels" / "test.tsv").open("w") as qrels,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for length, folder in sorted(folders.items()):
            for line in (folder / "corpus.jsonl").read_text().splitlines():
                row = json.loads(line)
                corpus.write(json.dumps({**row, "_id": f"{length}-{row['_id']}"}) + "\n")
            for line in (folder / "queries.jsonl").read_text().splitlines():
                row = json.loads(line)
                queries.write(json.dumps({**row, "_id": f"{length}-{row['_id']}"}) + "\n")
            for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
                qid, did, score = line.split("\t")
                qrels.write(f"{length}-{qid}\t{length}-{did}\t{score}\n")
    return out


def task_folders(
    haystack: Path, work: Path, lengths: list[int], depths: list[float], per_cell: int, seed: int
) -> dict[str, dict[int, Path]]:
    """Passkey and needle BEIR folders, one per length (deterministic from the seed), token lengths counted by
    the default model's tokenizer: task -> length -> folder."""
    texts = [d["text"] for d in load_beir(haystack).corpus.values()]
    count = tokenizer_counter("smollm2-135m")
    return {
        task: make(texts, work / "parts", lengths, depths, per_cell, seed, count)
        for task, make in (("passkey", make_passkey), ("needle", make_needle))
    }


def synthetic_sets(
    haystack: Path, work: Path, lengths: list[int], depths: list[float], per_cell: int, seed: int
) -> dict[str, Path]:
    """One BEIR folder per task holding every length (see task_folders): task -> folder."""
    return {
        task: merged_task(folders, work / task)
        for task, folders in task_folders(haystack, work, lengths, depths, per_cell, seed).items()
    }


def dense_run(
    queries: np.ndarray, docs: np.ndarray, query_ids: list[str], doc_ids: list[str], depth: int = 100
) -> dict:
    """Exact inner-product top-`depth` run as {qid: {docid: score}}."""
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :depth]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}


def ndcg(data: BeirData, qids: list[str], run: dict) -> float:
    """NDCG@10 x100 of a run over some queries."""
    return 100 * evaluate_run({q: data.qrels[q] for q in qids}, {q: run[q] for q in qids})["ndcg@10"]


def scores_by_bucket(qrels: dict, run: dict, words: dict[str, int]) -> dict[str, float]:
    """NDCG@10 x100 overall and per length bucket of each query's relevant documents (median words), with the
    query count of each bucket under 'n <bucket>'."""
    per_query = evaluate_run(qrels, run)["per_query"]
    buckets: dict[str, list[float]] = {}
    for qid, value in per_query.items():
        length = statistics.median(words[d] for d in qrels[qid])
        buckets.setdefault(bucket_name(length), []).append(value)
    out = {"all": 100 * statistics.fmean(per_query.values())}
    out.update({b: 100 * statistics.fmean(v) for b, v in buckets.items()})
    out.update({f"n {b}": len(v) for b, v in buckets.items()})
    return out


def length_buckets(rows: list[dict]) -> list[str]:
    """The length buckets that rows of scores_by_bucket hold, shortest first: a table's columns."""
    return sorted(
        {k for r in rows for k in r if k[0].isdigit() or k.startswith(">=")},
        key=lambda b: int(b.lstrip(">=").split("-")[0]),
    )
