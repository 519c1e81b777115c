"""Self-calibration: pseudo-query sampling, the closed-form metric, adapter and fusion choices on synthetic
vectors, and calibration stored with the index and applied the same way by every search path."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from conftest import WORDS, write_corpus
from htp.segment import Segmenter
from indexes.store import MANIFEST, open_index
from pipeline.config import Config
from pipeline.evaluation.metrics import evaluate_run
from pipeline.ingest.builder import build
from pipeline.ingest.calibration import (
    FUSIONS,
    Calibration,
    calibration_data,
    choose_fusion,
    fit,
    fit_adapter,
    query_like,
    ranking_ndcg,
    sample_pseudo_queries,
    target_ndcg,
    without_sentence,
)
from pipeline.query.fusion import FusionChoice, fuse
from pipeline.query.searcher import Searcher
from pipeline.vectors import prepare


def naive_starts(texts: list[str]) -> list[list[int]]:
    """Sentence starts after '. ' (the tests' texts are simple)."""
    out = []
    for text in texts:
        starts = [0] + [i + 2 for i in range(len(text) - 1) if text[i : i + 2] == ". "]
        out.append(starts)
    return out


TEXTS = [
    f"Document {i} talks about the library catalogue today. It lists journals and records for readers. "
    f"Number {i} ends with a third plain sentence here."
    for i in range(40)
]


def test_query_like_keeps_prose_and_drops_code_and_fragments():
    assert query_like("abort the program if the assertion is false")
    assert not query_like("see also")
    assert not query_like("int x = 0; x += 1; return x; // 42 17")


def test_sampling_is_deterministic_and_keeps_dev_documents_out_of_training():
    a = sample_pseudo_queries(TEXTS, naive_starts, count=30, dev_count=8, seed=3)
    b = sample_pseudo_queries(TEXTS, naive_starts, count=30, dev_count=8, seed=3)
    c = sample_pseudo_queries(TEXTS, naive_starts, count=30, dev_count=8, seed=4)
    assert a == b and a != c
    assert len(a.dev) == 8 and len(a.train) == 30
    assert not {q.row for q in a.dev} & {q.row for q in a.train}
    for q in [*a.dev, *a.train]:
        assert TEXTS[q.row][q.start : q.end] == q.text and query_like(q.text)


def test_without_sentence_removes_exactly_that_sentence():
    q = sample_pseudo_queries(TEXTS, naive_starts, count=1, dev_count=1, seed=0).dev[0]
    edited = without_sentence(TEXTS[q.row], q)
    assert q.text not in edited
    assert len(edited.split()) == len(TEXTS[q.row].split()) - len(q.text.split())


def test_development_documents_the_encoder_reads_unchanged_keep_their_vector():
    encoded: list[str] = []

    def encode(items: list[str], kind: str) -> np.ndarray:
        encoded.extend(items if kind == "document" else [])
        return np.random.default_rng(len(items)).normal(size=(len(items), 4)).astype(np.float32)

    docs = prepare(np.random.default_rng(0).normal(size=(len(TEXTS), 4)).astype(np.float32), None)
    sample = sample_pseudo_queries(TEXTS, naive_starts, count=20, dev_count=10, seed=0)
    unseen = {q.row for q in sample.dev[::2]}  # as if their removed sentence lay past truncation

    def same_input(originals: list[str], edited: list[str]) -> list[bool]:
        return [TEXTS.index(text) in unseen for text in originals]

    data = calibration_data(TEXTS, docs, None, encode, naive_starts, 20, 10, 0, bm25=False, same_input=same_input)
    assert data.dev_documents_encoded == len(encoded) == 5
    rows = [q.row for q in data.sample.dev]
    assert [np.array_equal(data.dev_docs[row], docs[row]) for row in rows] == [row in unseen for row in rows]


def test_target_ndcg_matches_ranx():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 30))
    targets = rng.integers(0, 30, size=20)
    run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(30)} for i in range(20)}
    qrels = {f"q{i}": {f"d{t}": 1} for i, t in enumerate(targets)}
    assert target_ndcg(scores, targets) == pytest.approx(evaluate_run(qrels, run)["ndcg@10"], abs=1e-9)
    rankings = [list(np.argsort(-row)) for row in scores]
    assert ranking_ndcg(rankings, targets.tolist()) == pytest.approx(target_ndcg(scores, targets), abs=1e-9)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_adapter_learns_a_map_that_the_identity_misses():
    rng = np.random.default_rng(0)
    docs = unit(rng.normal(size=(200, 16)))
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    targets = rng.integers(0, 200, size=600)
    queries = unit(docs[targets] @ rotation.T + 0.1 * rng.normal(size=(600, 16)))
    w, report = fit_adapter(
        queries[:500], targets[:500], docs, queries[500:], targets[500:], docs, penalty=1e-4, seed=0, steps=400, lr=1e-2
    )
    assert w is not None
    assert report["dev_ndcg_adapter"] > report["dev_ndcg_identity"] + 0.3


def test_fusion_leans_on_bm25_when_dense_is_noise_and_on_dense_when_it_is_right():
    rng = np.random.default_rng(1)
    docs = unit(rng.normal(size=(100, 8)))
    targets = np.arange(260) % 100

    def bm25_run(target: int, finds: bool) -> list[tuple[int, float]]:
        others = [int(r) for r in rng.permutation(100)[:30] if r != target]
        scores = sorted(rng.uniform(1, 5.5, size=len(others)), reverse=True)
        return ([(int(target), 6.0)] if finds else []) + list(zip(others, scores))

    good_bm25 = [bm25_run(t, i % 10 < 7) for i, t in enumerate(targets)]  # right at rank 1 for 70% of queries
    noise = unit(rng.normal(size=(260, 8)))
    chosen = fit(noise[:60], targets[:60], docs, noise[60:], targets[60:], docs, good_bm25[60:])  # 200 dev queries
    assert chosen.report["dev_best_fusion"] == "score_0"  # BM25 alone is best, and noise gets no real weight
    assert chosen.fusion.dense_weight <= 0.1 and chosen.report["dev_ndcg_score_0.3"] < chosen.report["dev_ndcg_score_0"]
    exact = docs[targets]
    useless_bm25 = [[(int(r), 1.0) for r in rng.permutation(100)[:20]] for _ in targets]
    chosen = fit(exact[:60], targets[:60], docs, exact[60:], targets[60:], docs, useless_bm25[60:])
    assert chosen.fusion.dense_weight == max(choice.dense_weight for choice in FUSIONS)


def test_fusion_steps_up_in_dense_weight_only_while_the_dev_set_cannot_tell_it_worse():
    rng = np.random.default_rng(3)
    best = rng.uniform(0.3, 0.9, size=200)
    swing = np.zeros(200)
    swing[:10], swing[10:20], swing[20] = 0.1, -0.1, 0.001  # better on some queries, worse on as many: noise
    gains = {
        FUSIONS[0]: best - 0.2,  # clearly worse than the best: never chosen
        FUSIONS[1]: best,  # the best on the development set
        FUSIONS[2]: best - swing,  # a hair below the best on average, within noise
        FUSIONS[3]: best - 0.05,  # worse on every query: the walk stops here
        FUSIONS[4]: best,
    }  # as good again, but past a clear loss
    chosen, top = choose_fusion(gains, seed=0)
    assert top == FUSIONS[1] and chosen == FUSIONS[2]
    assert choose_fusion({FUSIONS[0]: best, FUSIONS[1]: best - 0.1}, seed=0) == (FUSIONS[0], FUSIONS[0])


def test_calibration_queries_apply_adapter_then_correction():
    rng = np.random.default_rng(2)
    w, mean = rng.normal(size=(4, 4)).astype(np.float32), unit(rng.normal(size=(1, 4)))[0]
    q = unit(rng.normal(size=(3, 4)))
    got = Calibration(w, mean, 0.5, FusionChoice("rrf", 0.1)).queries(q)
    expected = unit(unit(q + q @ w) - 0.5 * mean)
    assert np.allclose(got, expected, atol=1e-6)
    stored = Calibration(w, mean, 0.5, FusionChoice("score", 0.2), {"seconds": 1.0})
    again = Calibration.load(json.loads(json.dumps(stored.settings())), stored.arrays())
    assert np.allclose(again.queries(q), stored.queries(q)) and again.fusion == stored.fusion


def test_fuse_with_zero_dense_weight_is_bm25_order():
    dense, bm25 = [("a", 0.9), ("b", 0.5), ("z", 0.1)], [("c", 7.0), ("b", 3.0), ("a", 1.0)]
    for method in ("rrf", "score"):
        assert [d for d, _ in fuse(dense, bm25, FusionChoice(method, 0.0), 3)] == ["c", "b", "a"]
    assert [d for d, _ in fuse(dense, bm25, FusionChoice("score", 1.0), 2)] == ["a", "b"]


@pytest.fixture
def calibrating(config: Config) -> Config:
    """The tiny pipeline configuration with a calibration sized for a few dozen documents."""
    return replace(config, calibration=replace(config.calibration, pseudo_queries=40, dev_queries=10))


def test_calibration_is_deterministic_stored_and_applied_by_every_path(calibrating, tmp_path):
    config = calibrating
    corpus = write_corpus(tmp_path / "corpus.jsonl", 48)
    first = build(config, corpus, tmp_path / "a")
    second = build(config, corpus, tmp_path / "b")
    assert first.calibration is not None
    assert {k: v for k, v in first.calibration.items() if k != "seconds"} == {
        k: v for k, v in second.calibration.items() if k != "seconds"
    }
    a, b = open_index(tmp_path / "a"), open_index(tmp_path / "b")
    assert a.manifest.calibration == first.calibration
    assert a.calibration_arrays.keys() == b.calibration_arrays.keys()
    for name in a.calibration_arrays:
        assert np.array_equal(a.calibration_arrays[name], b.calibration_arrays[name])
    searcher = Searcher(tmp_path / "a", config)
    assert searcher.calibration is not None and searcher.fusion == searcher.calibration.fusion
    query = "library catalogue of the stock market"
    expected = searcher.calibration.queries(
        prepare(searcher.encoder.encode([query], kind="query"), searcher.index.center)
    )
    rows = searcher.index.search(expected, 5)[0]
    assert [i for i, _ in searcher.dense([query], 5)[0]] == [i for i, _ in rows]


def test_an_index_without_calibration_loads_and_searches(calibrating, tmp_path):
    config = calibrating
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    summary = build(replace(config, index=replace(config.index, calibrate=False)), corpus, tmp_path / "plain")
    assert summary.calibration is None and not (summary.version_dir / "calibration.npz").exists()
    manifest_path = summary.version_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["calibration"], manifest["sizes"]  # as written before calibration and sizes existed
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "plain" / "CURRENT").write_text(summary.version_dir.name + "\n")  # no manifest digest then either
    searcher = Searcher(tmp_path / "plain", config)
    assert searcher.calibration is None and searcher.fusion == FusionChoice("rrf", config.search.dense_weight)
    for mode in ("dense", "bm25", "hybrid"):
        assert len(searcher.search("protein market", 5, mode=mode)) == 5


def test_a_corpus_without_prose_builds_uncalibrated_and_says_so(calibrating, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    corpus = tmp_path / "code.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"c{i}", "text": f"x{i} = f({i}, 0x{i:x}); y{i} += 2"}) + "\n" for i in range(30))
    )
    summary = build(calibrating, corpus, tmp_path / "code")
    assert (
        summary.calibration is None
        and "calibrate: skipped: too few training and development pseudo-queries" in caplog.text
    )
    assert "could be drawn from 30 documents, and 10 of each are needed" in caplog.text
    assert len(Searcher(tmp_path / "code", calibrating).search("f(3)", 3, mode="hybrid")) == 3


def test_a_small_corpus_calibrates_with_the_default_counts(config, tmp_path):
    """60 documents of several sentences: development queries, one per document and drawn first, took every
    document and left none to train on; now the documents are split in the counts' proportion."""
    rng = np.random.default_rng(0)
    sentences = [[" ".join(rng.choice(WORDS, size=6)).capitalize() + "." for _ in range(3)] for _ in range(60)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": " ".join(s)}) + "\n" for i, s in enumerate(sentences))
    )
    assert config.calibration.pseudo_queries == 2000 and config.calibration.dev_queries == 200  # the defaults
    summary = build(config, corpus, tmp_path / "index")
    assert summary.calibration is not None
    sample = sample_pseudo_queries(
        [json.loads(line)["text"] for line in corpus.read_text().splitlines()],
        Segmenter("sentencizer").sentence_starts,
        2000,
        200,
        seed=0,
    )
    assert len(sample.dev) == 10 and len(sample.train) >= 10
    assert not {q.row for q in sample.dev} & {q.row for q in sample.train}  # no document in both


def test_the_adapter_s_softmax_keeps_a_small_corpus_whole_and_samples_a_large_one():
    from pipeline.ingest.calibration import NEGATIVES, _softmax_documents

    small = np.arange(40, dtype=np.float32).reshape(20, 2)
    docs, targets = _softmax_documents(small, np.array([3, 3, 19]), seed=0)
    assert docs is small and targets.tolist() == [3, 3, 19]
    large = np.arange(NEGATIVES + 500, dtype=np.float32)[:, None]
    wanted = np.array([7, NEGATIVES + 499, 7, 4000])
    docs, targets = _softmax_documents(large, wanted, seed=0)
    assert len(docs) == NEGATIVES and np.array_equal(docs[targets, 0], large[wanted, 0])  # each target is kept
    assert np.all(np.diff(docs[:, 0]) > 0)  # corpus order, no document twice
    again, _ = _softmax_documents(large, wanted, seed=0)
    assert np.array_equal(again, docs)
