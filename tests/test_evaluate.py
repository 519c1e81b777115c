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


@pytest.fixture(scope="module")
def tiny_sentence_encoder(tiny_tokenizer, tmp_path_factory) -> Path:
    """A randomly initialised two-layer BERT with mean pooling, saved as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    base = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, pad_token="<unk>")
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(base)
    tokenizer.save_pretrained(base)
    word = models.Transformer(str(base), max_seq_length=128)
    folder = tmp_path_factory.mktemp("tiny-st")
    SentenceTransformer(modules=[word, models.Pooling(32, "mean")], device="cpu").save(str(folder))
    return folder


def test_a_trained_encoder_is_scored_beside_htp_with_the_same_bm25(config, tmp_path, tiny_sentence_encoder):
    from pipeline.evaluation.trained import RRF_EQUAL, trained_rankings
    from pipeline.query.fusion import fuse

    dataset = beir_folder(tmp_path / "toy")
    method = f"st:{tiny_sentence_encoder}"
    modes = ["dense", "bm25", "hybrid"]
    trained = run_eval(config, EvalRequest(dataset=dataset, methods=[method], out=tmp_path / "st", modes=modes))
    htp = run_eval(config, EvalRequest(dataset=dataset, methods=["htp"], out=tmp_path / "htp", modes=modes))
    assert set(trained["results"]) == {method, "bm25", f"{method}+bm25"}
    assert trained["results"]["bm25"] == htp["results"]["bm25"]  # the same BM25 and metrics as HTP's rows
    texts, ids = ["a cat on a mat", "stock markets fell", "books in a library"], ["c", "s", "l"]
    ranked = trained_rankings(method, ids, texts, ["cat", "library books"], modes, 3)
    assert ranked["hybrid"] == [fuse(d, b, RRF_EQUAL, 3) for d, b in zip(ranked["dense"], ranked["bm25"])]
    assert [hit[0] for hit in ranked["bm25"][1]][0] == "l"


def test_a_trained_encoder_that_is_not_there_is_named():
    from pipeline.errors import InputMissingError
    from pipeline.evaluation.trained import model_folder

    with pytest.raises(InputMissingError, match="st:no_such_model: no sentence-transformers model folder"):
        model_folder("st:no_such_model")
