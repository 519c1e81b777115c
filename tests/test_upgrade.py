"""Index folders written by landed main (tests/fixtures/landed-index*, see their README) still open, verify and
search with today's code, and today's encoder still makes the vectors they hold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from htp import EncoderConfig, HTPEncoder
from indexes.store import open_index
from pipeline.ingest.changes import delete
from pipeline.query.searcher import Searcher
from pipeline.records import full_text
from pipeline.vectors import prepare

FIXTURE = Path(__file__).parent / "fixtures" / "landed-index"
WITH_METADATA = Path(__file__).parent / "fixtures" / "landed-index-1635f66"  # HNSW32, metadata fields, BM25 terms


@pytest.fixture
def landed(tmp_path) -> Path:
    copy = tmp_path / "landed-index"
    shutil.copytree(FIXTURE, copy)
    return copy


def test_a_landed_index_opens_verifies_and_answers_bm25(landed):
    index = open_index(landed, verify=True)
    assert index.manifest.count == 60 and index.manifest.calibration["fusion"] == "score"
    doc = index.documents(["d7"])[0]
    assert doc["title"] == "Doc 7"
    hits = Searcher(landed).search(doc["text"], 5, mode="bm25")
    assert hits[0].id == "d7" or hits[0].score == hits[1].score  # its own text ranks it first (or ties)


def test_an_index_written_before_the_pipeline_was_split_filters_searches_and_changes(tmp_path):
    """Written at 1635f66, the last commit before pipeline/ became ingest/, query/ and service/."""
    landed = tmp_path / "landed"
    shutil.copytree(WITH_METADATA, landed)
    index = open_index(landed, verify=True)
    assert index.manifest.factory == "HNSW32" and set(index.manifest.metadata) == {"section", "tags"}
    hits = Searcher(landed).search("library catalogue", 20, mode="bm25", where={"section": 2, "tags": "even"})
    assert hits and all(hit.metadata["section"] == 2 and hit.metadata["tags"] == ["even"] for hit in hits)
    summary = delete(landed, ["d2"])
    assert summary.deleted == 1 and summary.documents == 59
    assert "d2" not in {hit.id for hit in Searcher(landed).search("library catalogue", 60, mode="bm25")}


def test_today_s_encoder_makes_the_vectors_a_landed_index_holds(landed, tiny_model_dir):
    index = open_index(landed)
    settings = {**index.manifest.encoder, "model": str(tiny_model_dir), "device": "cpu"}
    encoder = HTPEncoder(EncoderConfig.from_dict(settings))
    rows = index.documents(index.ids[:12])
    stored = np.stack([index.faiss.reconstruct(i) for i in range(12)])
    today = prepare(encoder.encode([full_text(r["title"], r["text"]) for r in rows], kind="document"), index.center)
    assert np.min(np.sum(stored * today, axis=1)) > 0.99  # float32 or bfloat16, whichever this CPU runs
    searcher = Searcher(landed, encoder=encoder)
    assert searcher.calibration is not None
    assert len(searcher.search(rows[0]["text"], 5, mode="hybrid")) == 5


def test_a_killed_build_s_temp_folder_from_before_the_marker_is_removed_and_nothing_else(landed):
    from indexes.store import locked_for_writing

    versions = landed / "versions"
    killed = versions / ".tmp-k1lled_9"  # what a build killed before folders had markers left: no marker
    (killed / "bm25").mkdir(parents=True)
    (killed / "ids.parquet").write_bytes(b"partial")
    theirs = versions / ".tmp-notes"  # not a name tempfile makes
    theirs.mkdir()
    with locked_for_writing(landed) as removed:
        assert removed == [killed]
    assert not killed.exists() and theirs.is_dir()
