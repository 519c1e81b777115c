"""Retrieval metrics with ranx: NDCG@10, Recall@10, Recall@100, MRR@10, and NDCG@10 per query."""

from __future__ import annotations

from typing import Any

from ranx import Qrels, Run, evaluate

from pipeline.errors import PipelineValueError

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")  # ranx names; its ndcg uses linear gains, as trec_eval does


def evaluate_run(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], ignore_identical_ids: bool = False
) -> dict:
    """Mean NDCG@10, Recall@10/100, MRR@10 over the queries in `qrels`, and NDCG@10 per query under `per_query`."""
    # Every judgement is kept; a query missing from the run scores 0, run queries without judgements are ignored, and
    # a hit whose id equals its query's id is dropped only when asked (BEIR drops them by default for some datasets).
    if not qrels:
        raise PipelineValueError("no judged queries to evaluate: qrels is empty")
    hits = {
        qid: {doc: float(score) for doc, score in run.get(qid, {}).items() if not (ignore_identical_ids and doc == qid)}
        for qid in qrels
    }
    ranx_run = Run.from_dict(hits)
    means = evaluate(Qrels.from_dict(qrels), ranx_run, list(METRICS), save_results_in_run=True)
    scores: dict[str, Any] = {name: float(means[name]) for name in METRICS}
    scores["per_query"] = {qid: float(value) for qid, value in ranx_run.scores["ndcg@10"].items()}
    return scores
