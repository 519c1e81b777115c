"""Multi-vector indexes (index.window_tokens): each document's sentence windows are indexed separately and a
document scores its best window; search returns documents, never windows. With index.page_vector each page keeps
its own vector, a truncated one adds its windows, and calibration fits on the page vectors."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np

from conftest import write_corpus
from indexes.store import open_index
from pipeline.ingest.builder import build
from pipeline.ingest.changes import add
from pipeline.ingest.shards import read_shards
from pipeline.query.searcher import Searcher
from pipeline.records import full_text
from pipeline.vectors import prepare


def test_windows_are_whole_sentences_within_the_budget(make_encoder):
    encoder = make_encoder(method="htp")
    text = "The cat sat on the mat. It was a sunny day in the park. Stock markets fell. Investors were worried."
    windows = encoder.windows([text], 12)[0]
    assert len(windows) > 1 and " ".join(windows) == text
    sizes = [len(encoder.tokenizer(w, add_special_tokens=False)["input_ids"]) for w in windows]
    assert all(size <= 12 for size in sizes[:-1]) or len(windows) == 1


def test_a_multi_vector_index_ranks_documents_by_their_best_window(config, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    windowed = replace(config, index=replace(config.index, window_tokens=8))
    summary = build(windowed, write_corpus(tmp_path / "corpus.jsonl", 24), tmp_path / "index")
    assert "calibrate: skipped: a multi-vector index" in caplog.text
    index = open_index(tmp_path / "index")
    assert index.manifest.window_tokens == 8 and index.faiss.ntotal > 24 and len(index.doc_ids) == 24
    rows, vectors = zip(*read_shards(summary.shard_dir))
    row_ids = [i for part in rows for i in part]
    windows = prepare(np.concatenate(vectors), index.center)
    searcher = Searcher(tmp_path / "index", windowed)
    query = "protein market report"
    q = prepare(searcher.encoder.encode([query], kind="query"), index.center)
    best: dict[str, float] = {}
    for doc, score in zip(row_ids, (windows @ q[0]).tolist()):
        best[doc] = max(best.get(doc, -np.inf), score)
    expected = sorted(best.items(), key=lambda item: -item[1])[:5]
    got = searcher.dense([query], 5)[0]
    assert [d for d, _ in got] == [d for d, _ in expected]
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
    for mode in ("dense", "bm25", "hybrid"):
        hits = searcher.search(query, 7, mode=mode)
        assert len({h.id for h in hits}) == len(hits) == 7 and all(h.title.startswith("Doc") for h in hits)
    again = build(windowed, tmp_path / "corpus.jsonl", tmp_path / "index")
    assert again.encoded == 0 and again.reused == 24


def test_pages_keep_their_own_vector_and_only_a_truncated_page_adds_its_windows(config, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    chosen = replace(
        config,
        encoder=replace(config.encoder, max_length=32),
        index=replace(config.index, window_tokens=8, page_vector=True),
        calibration=replace(config.calibration, pseudo_queries=40, dev_queries=10),
    )
    corpus = write_corpus(tmp_path / "corpus.jsonl", 48)
    summary = build(chosen, corpus, tmp_path / "index")
    assert "calibrate: skipped" not in caplog.text and summary.calibration is not None  # fitted on the page vectors
    index = open_index(tmp_path / "index")
    assert index.manifest.page_vector and index.manifest.calibration
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    texts = [full_text(r["title"], r["text"]) for r in records]
    encoder = Searcher(tmp_path / "index", chosen).encoder
    truncated = [layout.truncated for layout in encoder.layouts(texts)]
    assert 0 < sum(truncated) < len(texts)
    rows, vectors = zip(*read_shards(summary.shard_dir))
    by_doc: dict[str, list[np.ndarray]] = {}
    for part, values in zip(rows, vectors):
        for doc, vector in zip(part, values):
            by_doc.setdefault(doc, []).append(vector)
    assert sorted(by_doc) == sorted(r["_id"] for r in records)
    pages = encoder.encode(texts, kind="document")
    for record, text, page, cut in zip(records, texts, pages, truncated):
        own = by_doc[record["_id"]]
        windows = encoder.windows([text], 8)[0] if cut else []
        assert len(own) == 1 + len(windows)
        assert np.allclose(own[0], page, atol=1e-4)
        if windows:
            assert np.allclose(np.stack(own[1:]), encoder.encode(windows, kind="document"), atol=1e-4)
    long = {"_id": "long", "title": "Long", "text": " ".join(f"Sentence {i} about the stock market." for i in range(9))}
    (tmp_path / "more.jsonl").write_text(json.dumps(long) + "\n")
    add(tmp_path / "index", tmp_path / "more.jsonl", chosen)  # a change encodes its records with the index's layout
    changed = open_index(tmp_path / "index")
    assert changed.ids.count("long") == 1 + len(encoder.windows([full_text("Long", long["text"])], 8)[0]) > 2
