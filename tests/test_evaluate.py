"""`htp eval` end to end on the tiny model: every method and mode scored, outputs written, caches reused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.evaluation.evaluate import EvalRequest, bucket_name, run_eval

TOPICS = {
    "cats": "The cat sat on the mat. It was sunny in the park.",
    "stocks": "Stock markets fell sharply. Investors read the report.",
    "library": "A library stores books and journals. Librarians index records by subject.",
    "proteins": "Proteins fold into shapes. Misfolding matters for function.",
}


def beir_folder(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i, (topic, text) in enumerate(TOPICS.items()):
            for j in range(3):
                f.write(
                    json.dumps({"_id": f"{topic}{j}", "title": topic, "text": " ".join([text] * (1 + 20 * i))}) + "\n"
                )
    with (root / "queries.jsonl").open("w") as f:
        for topic in TOPICS:
            f.write(json.dumps({"_id": f"q-{topic}", "text": f"{topic} {TOPICS[topic].split('.')[0]}"}) + "\n")
        f.write(json.dumps({"_id": "q-unjudged", "text": "nothing"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q-{t}\t{t}{j}\t1" for t in TOPICS for j in range(3)]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def config(tiny_model_dir) -> Config:
    base = Config()
    return replace(
        base,
        encoder=replace(base.encoder, model=str(tiny_model_dir), device="cpu", max_length=128),
        index=replace(base.index, shard_size=4),
    )


def test_eval_scores_every_method_and_mode_and_writes_outputs(config, tmp_path):
    dataset = beir_folder(tmp_path / "toy")
    request = EvalRequest(
        dataset=dataset, methods=["vanilla-mean", "htp"], out=tmp_path / "out", modes=["dense", "bm25", "hybrid"]
    )
    results = run_eval(config, request)
    rows = results["results"]
    assert set(rows) == {"vanilla-mean", "htp", "bm25", "vanilla-mean+bm25", "htp+bm25"}
    assert results["queries"] == 4
    for scores in rows.values():
        assert 0.0 <= scores["ndcg@10"] <= 1.0 and 0.0 <= scores["recall@100"] <= 1.0
    assert rows["bm25"]["recall@10"] == 1.0  # the topic word is in every relevant title
    assert len(rows["htp"]["ndcg@10_by_length"]) > 1
    folder = tmp_path / "out" / "toy"
    for name in ("results.json", "results.md", "plot.png"):
        assert (folder / name).stat().st_size > 0
    assert "| htp |" in (folder / "results.md").read_text()
    shards = sorted((tmp_path / "out" / "indexes" / "toy" / "htp" / "shards").rglob("shard-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    run_eval(config, replace(request, methods=["htp"], modes=["dense"]))
    assert [p.stat().st_mtime_ns for p in shards] == stamps, "cached embeddings are reused, not recomputed"


def test_sampled_queries_keep_their_judgements(config, tmp_path):
    dataset = beir_folder(tmp_path / "toy")
    results = run_eval(
        config, EvalRequest(dataset=dataset, methods=["vanilla-mean"], out=tmp_path / "out", sample_queries=2, seed=1)
    )
    assert results["queries"] == 2


def test_length_buckets():
    assert bucket_name(10) == "0-128"
    assert bucket_name(300) == "256-512"
    assert bucket_name(5000) == ">=1024"
