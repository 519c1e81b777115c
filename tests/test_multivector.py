"""Multi-vector indexes (index.window_tokens): each document's sentence windows are indexed separately and a
document scores its best window; search returns documents, never windows."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from conftest import write_corpus
from indexes.store import open_index
from pipeline.build import build
from pipeline.searcher import Searcher
from pipeline.shards import read_shards
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
