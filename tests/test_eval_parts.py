"""Evaluation parts: BEIR loading with counted problems, query sampling and splits, ranx metrics against hand-computed
values, reciprocal rank fusion, and the synthetic passkey / needle tasks."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import datasets
import pytest

from pipeline.evaluation.beir import BeirData, load_beir, sample_queries, split_queries
from pipeline.evaluation.metrics import evaluate_run
from pipeline.evaluation.synthetic import main as synth_main
from pipeline.evaluation.synthetic import make_needle, make_passkey
from pipeline.ingest.load import FieldNames, load_documents
from pipeline.query.fusion import rrf

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


@pytest.fixture
def messy(tmp_path) -> Path:
    """A BEIR folder with every kind of inconsistency load_beir counts."""
    corpus = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(5)] + [
        {"_id": "empty", "text": " "}
    ]
    queries = [
        {"_id": "q1", "text": "one"},
        {"_id": "q2", "text": "two"},
        {"_id": "q3", "text": "unjudged"},
        {"_id": "q4", "text": "only non-relevant"},
    ]
    qrels = [
        ("q1", "d0", 1),
        ("q1", "d1", 2),
        ("q2", "d2", 1),
        ("q4", "d3", 0),
        ("q1", "d0", 1),  # duplicate row
        ("q9", "d0", 1),
        ("q9", "d4", 1),  # unknown query
        ("q2", "nope", 1),
        ("q2", "empty", 1),  # unknown document, and one skipped as empty
        ("q9", "nope", 1),
    ]  # both unknown
    return write_beir(tmp_path / "messy", corpus, queries, qrels)


def test_load_beir_counts_and_warns_about_every_problem(messy, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.beir"):
        data = load_beir(messy, cache_dir=tmp_path / "cache")
    assert data.problems == {
        "empty_documents": 1,
        "empty_queries": 0,
        "qrels_query_not_in_queries": 3,
        "qrels_doc_not_in_corpus": 3,
        "qrels_rows_dropped": 5,
        "qrels_duplicate_rows": 1,
    }
    assert "qrels_rows_dropped: 5" in caplog.text and "qrels_duplicate_rows: 1" in caplog.text
    assert data.qrels == {"q1": {"d0": 1, "d1": 2}, "q2": {"d2": 1}, "q4": {"d3": 0}}
    assert list(data.queries) == ["q1", "q2", "q3", "q4"]
    assert data.judged_query_ids() == ["q1", "q2"]
    assert data.corpus["d1"] == {"title": "T1", "text": "text 1"} and "empty" not in data.corpus


def test_load_beir_missing_split_lists_the_present_ones(messy, tmp_path):
    with pytest.raises(FileNotFoundError, match="split 'dev'.*qrels splits present: test"):
        load_beir(messy, split="dev", cache_dir=tmp_path / "cache")


def test_cisi_loads_without_problems(tmp_path):
    data = load_beir(CISI, cache_dir=tmp_path / "cache")
    assert (len(data.corpus), len(data.queries), len(data.judged_query_ids())) == (1460, 112, 76)
    assert sum(len(v) for v in data.qrels.values()) == 3114 and not any(data.problems.values())


def judged_data(count: int) -> BeirData:
    corpus = {f"d{i}": {"title": "", "text": f"text {i}"} for i in range(count)}
    queries = {f"q{i}": f"query {i}" for i in range(count + 3)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{(i + 1) % count}": 1} for i in range(count)}
    return BeirData(corpus, queries, qrels, {"qrels_rows_dropped": 0})


def test_sample_queries_is_seeded_and_keeps_relevant_documents():
    data = judged_data(20)
    sample = sample_queries(data, 5, seed=3)
    assert len(sample.queries) == 5 and sample.judged_query_ids() == list(sample.queries)
    assert sample.queries == sample_queries(data, 5, seed=3).queries != sample_queries(data, 5, seed=4).queries
    assert all(doc in sample.corpus for rels in sample.qrels.values() for doc in rels)
    assert sample.problems == data.problems
    assert len(sample_queries(data, 100, seed=0).queries) == 20


def test_split_queries_gives_disjoint_deterministic_halves():
    data = judged_data(21)
    dev, test = split_queries(data, seed=1)
    assert set(dev.queries).isdisjoint(test.queries)
    assert sorted(dev.judged_query_ids() + test.judged_query_ids()) == sorted(data.judged_query_ids())
    assert (len(dev.queries), len(test.queries)) == (10, 11)
    again = split_queries(data, seed=1)
    assert (again[0].queries, again[1].queries) == (dev.queries, test.queries)
    assert split_queries(data, seed=2)[0].queries != dev.queries
    assert len(split_queries(data, seed=1, fraction=0.25)[0].queries) == 5
    with pytest.raises(ValueError, match="fraction"):
        split_queries(data, seed=1, fraction=1.0)


def dcg(gains: list[float]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, 1))


def ranked(*docs: str) -> dict[str, float]:
    """A run for one query: the given order, as descending scores."""
    return {doc: float(len(docs) - i) for i, doc in enumerate(docs)}


def test_ideal_ranking_scores_one():
    scores = evaluate_run({"q": {"a": 2, "b": 1}}, {"q": ranked("a", "b", "x")})
    assert scores["ndcg@10"] == pytest.approx(1.0) and scores["mrr@10"] == 1.0 and scores["recall@10"] == 1.0
    assert scores["per_query"] == {"q": pytest.approx(1.0)}


def test_permuted_ranking_matches_the_formulas():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    scores = evaluate_run(qrels, {"q": ranked("x", "b", "c", "a")})
    expected = dcg([0, 1, 0, 2]) / dcg([2, 1])  # linear gains, as trec_eval (and BEIR) use
    assert scores["ndcg@10"] == pytest.approx(expected) and scores["per_query"]["q"] == pytest.approx(expected)
    assert scores["mrr@10"] == pytest.approx(1 / 2)  # c has score 0: judged but not relevant
    assert scores["recall@10"] == 1.0


def test_recall_cutoffs_and_missing_queries():
    far = [f"x{i}" for i in range(10)] + ["a"]
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    scores = evaluate_run(qrels, {"q1": ranked(*far), "unjudged": ranked("a")})
    assert scores["recall@10"] == 0.0 and scores["recall@100"] == pytest.approx(0.5 / 2)
    assert scores["mrr@10"] == 0.0 and scores["per_query"] == {"q1": 0.0, "q2": 0.0}
    with pytest.raises(ValueError, match="qrels is empty"):
        evaluate_run({}, {"q": ranked("a")})


def test_identical_ids_are_dropped_only_when_asked():
    qrels, run = {"q": {"q": 1, "b": 1}}, {"q": ranked("q", "b")}
    assert evaluate_run(qrels, run)["ndcg@10"] == pytest.approx(1.0)
    dropped = evaluate_run(qrels, run, ignore_identical_ids=True)
    assert dropped["ndcg@10"] == pytest.approx(dcg([1]) / dcg([1, 1])) and dropped["recall@10"] == 0.5


def test_rrf_follows_the_formula():
    fused = rrf([["a", "b", "c"], ["c", "a"]], [1.0, 2.0], k=10, top=10)
    expected = {"a": 1 / 11 + 2 / 12, "b": 1 / 12, "c": 1 / 13 + 2 / 11}
    assert [doc for doc, _ in fused] == sorted(expected, key=lambda d: -expected[d])
    assert dict(fused) == pytest.approx(expected)


def test_rrf_equal_weights_ties_top_and_errors():
    fused = rrf([["a", "b"], ["b", "a"]], None, k=60, top=5)
    assert fused == [("a", pytest.approx(1 / 61 + 1 / 62)), ("b", pytest.approx(1 / 61 + 1 / 62))]
    assert [d for d, _ in rrf([["a", "b", "c", "d"]], [1.0], top=2)] == ["a", "b"]
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        rrf([["a"], ["b"]], [1.0], top=1)


@pytest.fixture(scope="module")
def haystack(tmp_path_factory) -> list[str]:
    """CISI abstracts: the real text the synthetic documents are cut from."""
    assert CISI.is_dir(), f"{CISI} is missing: the tests read ../shared/data beside the project"
    return list(load_documents(CISI, FieldNames(), cache_dir=tmp_path_factory.mktemp("cache")).dataset["text"])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("make", [make_passkey, make_needle])
def test_synthetic_tasks_are_deterministic(haystack, tmp_path, make):
    args = ([64, 256], [0.0, 0.5, 1.0], 2, 7)
    make(haystack, tmp_path / "a", *args)
    make(haystack, tmp_path / "b", *args)
    assert files(tmp_path / "a") == files(tmp_path / "b") and len(files(tmp_path / "a")) == 8
    make(haystack, tmp_path / "c", *args[:3], 8)
    assert files(tmp_path / "c") != files(tmp_path / "a")


@pytest.mark.parametrize("make", [make_passkey, make_needle])
def test_each_query_has_one_relevant_document_holding_the_answer(haystack, tmp_path, make):
    depths = [0.0, 0.25, 0.5, 0.75, 1.0]
    folders = make(haystack, tmp_path, [128, 512], depths, 3, 0)
    for length, folder in folders.items():
        data = load_beir(folder, cache_dir=tmp_path / "cache")
        meta = json.loads((folder / "meta.json").read_text())["documents"]
        assert not any(data.problems.values()) and len(data.corpus) == len(data.queries) == 15
        assert sorted(d["depth"] for d in meta.values()) == sorted(depths * 3)
        for qid in data.judged_query_ids():
            (doc,) = data.qrels[qid]
            assert meta[doc]["query_id"] == qid and meta[doc]["target_tokens"] == length
            holders = [d for d, fields in data.corpus.items() if meta[doc]["answer"] in fields["text"]]
            assert doc in holders
            assert length - 40 <= meta[doc]["tokens"] == len(data.corpus[doc]["text"].split()) <= length
            if length >= 512:
                assert abs(meta[doc]["actual_depth"] - meta[doc]["depth"]) <= 0.1
        assert len(set(data.queries.values())) == len(data.queries)


def test_passkey_queries_name_whose_key(haystack, tmp_path):
    folder = make_passkey(haystack, tmp_path, [256], [0.5], 4, 1)[256]
    data = load_beir(folder, cache_dir=tmp_path / "cache")
    meta = json.loads((folder / "meta.json").read_text())["documents"]
    for qid, query in data.queries.items():
        (doc,) = data.qrels[qid]
        name = query.removeprefix("What is ").removesuffix("'s pass key?")
        assert f"{name}'s pass key is {meta[doc]['answer']}." in data.corpus[doc]["text"]
        assert sum(meta[doc]["answer"] in d["text"] for d in data.corpus.values()) == 1


def test_token_counter_sets_the_length(haystack, tmp_path):
    def characters_over_four(text: str) -> int:
        return len(text) // 4

    folder = make_needle(haystack, tmp_path, [300], [0.5], 2, 0, count_tokens=characters_over_four)[300]
    meta = json.loads((folder / "meta.json").read_text())["documents"]
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        assert 280 <= characters_over_four(doc["text"]) == meta[doc["_id"]]["tokens"] <= 300


def test_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    synth_main(
        [
            "--",
            "--haystack",
            str(CISI),
            "--out",
            str(tmp_path),
            "--task",
            "needle",
            "--lengths",
            "64,128",
            "--depths",
            "0,1",
            "--per-cell",
            "2",
            "--seed",
            "3",
        ]
    )
    assert "needle at 128 tokens" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("needle-*")) == ["needle-128", "needle-64"]
    assert len((tmp_path / "needle-64" / "queries.jsonl").read_text().splitlines()) == 4
