"""Incremental rebuilds and on-disk IVF indexes: a changed corpus re-encodes only what changed and matches a
build from scratch; an IVF index merged on disk answers as the same index built in memory."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest

from conftest import write_corpus
from indexes.errors import IndexValueError
from indexes.faiss_index import build_faiss, new_index, search_faiss
from indexes.ondisk import IVF_DATA, build_on_disk
from indexes.store import open_index
from pipeline.cli import main as cli_main
from pipeline.ingest.builder import CALIBRATION_TEXTS, build
from pipeline.ingest.shards import ShardStore
from pipeline.query.searcher import Searcher


def edited(source: Path, target: Path) -> Path:
    """The corpus with d3 and d4 rewritten, d5 and d6 deleted, and three new documents."""
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows = [r for r in rows if r["_id"] not in ("d5", "d6")]
    for row in rows:
        if row["_id"] in ("d3", "d4"):
            row["text"] = "Stock market report on the protein catalogue. A sunny park."
    rows += [
        {"_id": f"n{i}", "title": f"New {i}", "text": f"Journal record {i} of the library subject index."}
        for i in range(3)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def index_vectors(out: Path) -> dict[str, np.ndarray]:
    index = open_index(out)
    return dict(zip(index.ids, index.faiss.reconstruct_n(0, index.faiss.ntotal)))


def test_a_changed_corpus_encodes_only_what_changed_and_matches_a_fresh_build(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 30)
    out = tmp_path / "index"
    first = build(config, corpus, out)
    assert (first.encoded, first.reused, first.dropped) == (30, 0, 0)
    changed = edited(corpus, tmp_path / "changed.jsonl")
    again = build(config, changed, out)
    assert (again.encoded, again.reused, again.dropped) == (5, 26, 4)
    fresh = build(config, changed, tmp_path / "fresh")
    assert fresh.encoded == 31
    ours, theirs = index_vectors(out), index_vectors(tmp_path / "fresh")
    assert list(ours) == list(theirs) == [json.loads(line)["_id"] for line in changed.read_text().splitlines()]
    assert max(float(np.abs(ours[i] - theirs[i]).max()) for i in ours) < 1e-5
    query = "protein market report"
    assert [h.id for h in Searcher(out, config).search(query, 10)] == [
        h.id for h in Searcher(tmp_path / "fresh", config).search(query, 10)
    ]
    unchanged = build(config, changed, out)
    assert (unchanged.encoded, unchanged.reused, unchanged.dropped) == (0, 31, 0)


def random_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8"])
def test_an_ivf_index_merged_on_disk_answers_as_the_in_memory_one(tmp_path, factory):
    vectors, queries = random_vectors(3000, 32, 0), random_vectors(20, 32, 1)
    batches = [vectors[i : i + 500] for i in range(0, len(vectors), 500)]
    memory = build_faiss(factory, 32, batches, vectors[:1000])
    disk = build_on_disk(factory, 32, batches, vectors[:1000], tmp_path / "build", part_rows=700)
    assert disk.ntotal == memory.ntotal == 3000 and (tmp_path / "build" / IVF_DATA).is_file()
    assert not (tmp_path / "build" / "parts").exists()
    for nprobe in (1, 16):
        got, want = search_faiss(disk, queries, 10, nprobe=nprobe), search_faiss(memory, queries, 10, nprobe=nprobe)
        assert np.array_equal(got[1], want[1]) and np.allclose(got[0], want[0], atol=1e-5)


def test_on_disk_needs_an_ivf_factory(tmp_path):
    with pytest.raises(IndexValueError, match="index.on_disk needs an IVF factory"):
        build_on_disk("Flat", 8, [random_vectors(10, 8, 0)], None, tmp_path, part_rows=10)
    assert new_index("Flat", 8, None).ntotal == 0


def test_a_built_on_disk_index_is_memory_mapped_and_survives_a_move(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 120)
    ivf = replace(config, index=replace(config.index, factory="IVF4,Flat", train_sample=120))
    build(ivf, corpus, tmp_path / "memory")
    build(replace(ivf, index=replace(ivf.index, on_disk=True)), corpus, tmp_path / "disk")
    version = open_index(tmp_path / "disk").path
    assert (version / IVF_DATA).is_file() and not (open_index(tmp_path / "memory").path / IVF_DATA).exists()
    opened = open_index(tmp_path / "disk")
    lists = faiss.extract_index_ivf(opened.faiss).invlists
    assert isinstance(faiss.downcast_InvertedLists(lists), faiss.OnDiskInvertedLists)
    del lists, opened
    shutil.move(tmp_path / "disk", tmp_path / "moved")
    query = "library catalogue of the stock market"
    memory = Searcher(tmp_path / "memory", ivf).search(query, 10, mode="dense")
    moved = Searcher(tmp_path / "moved", ivf).search(query, 10, mode="dense")
    assert [h.id for h in moved] == [h.id for h in memory]
    assert np.allclose([h.score for h in moved], [h.score for h in memory], atol=1e-5)


def test_an_on_disk_index_keeps_stdout_to_the_command_s_own_output(config, tmp_path, capfd):
    ivf = replace(
        config, index=replace(config.index, factory="IVF2,Flat", train_sample=40, on_disk=True, calibrate=False)
    )
    build(ivf, write_corpus(tmp_path / "corpus.jsonl", 40), tmp_path / "disk")
    capfd.readouterr()
    assert cli_main(["info", str(tmp_path / "disk")]) == 0
    printed = capfd.readouterr()
    assert json.loads(printed.out)["count"] == 40 and "ondisk" in printed.err  # FAISS's own line went to stderr


def test_a_rebuild_reuses_calibrations_encodings_and_calibrates_as_a_fresh_build(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 60)
    out = tmp_path / "index"
    first = build(config, corpus, out)
    cache = ShardStore(first.shard_dir / CALIBRATION_TEXTS, first.shard_dir.name)
    before = set(cache.locate())
    again = build(config, edited(corpus, tmp_path / "changed.jsonl"), out)
    after = set(cache.locate())
    assert before and after and len(after - before) <= 0.2 * len(after), f"{len(after - before)} of {len(after)} new"
    fresh = build(config, tmp_path / "changed.jsonl", tmp_path / "fresh")
    ours = {k: v for k, v in again.calibration.items() if k != "seconds"}
    theirs = {k: v for k, v in fresh.calibration.items() if k != "seconds"}
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], abs=1e-4) if isinstance(value, float) else value == theirs[key], key


def test_a_rebuild_reads_the_kept_vectors_of_edits_past_truncation_and_loads_no_model(config, tmp_path, monkeypatch):
    import htp.encoder

    config = replace(config, encoder=replace(config.encoder, max_length=44))
    corpus = write_corpus(tmp_path / "corpus.jsonl", 60)
    first = build(config, corpus, tmp_path / "index")
    assert first.calibration is not None
    assert first.calibration["dev_documents_encoded"] < first.calibration["dev_queries"]  # some edits were unseen

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rebuild loaded the model")

    monkeypatch.setattr(htp.encoder, "HTPEncoder", no_model)
    again = build(config, corpus, tmp_path / "index")
    assert again.encoded == 0
    ours = {k: v for k, v in again.calibration.items() if k != "seconds"}
    assert ours == {k: v for k, v in first.calibration.items() if k != "seconds"}
