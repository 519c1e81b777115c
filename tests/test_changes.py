"""Live changes (`htp add`, `htp delete`, POST/DELETE /documents): the sequence of changes gives the same search
results as a fresh build over the same records, on Flat, IVF and HNSW; only the records a change brings are encoded;
a SIGKILL in the middle leaves the old version answering and a rerun completes it; two writers meet the lock."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from conftest import WORDS, write_corpus
from indexes.store import IndexFolderError, locked_for_writing, open_index
from pipeline.cli import main as cli_main
from pipeline.ingest.builder import build
from pipeline.ingest.changes import ChangeError, add, change, delete
from pipeline.metadata import MetadataError
from pipeline.query.searcher import Searcher
from pipeline.service.app import create_app

QUERIES = ["protein market report", "library catalogue subject", "sunny park cat", "stock index journal"]


def record(i: int, version: int = 0) -> dict:
    words = " ".join(WORDS[(i * 5 + j + version * 3) % len(WORDS)] for j in range(7))
    return {"_id": f"d{i}", "title": f"Doc {i}", "text": f"{words.capitalize()}. Item {i}.", "section": i % 4}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def results(folder: Path, config) -> dict:
    searcher = Searcher(folder, config)
    return {
        (query, mode, where): [(hit.id, round(hit.score, 4), hit.metadata["section"]) for hit in hits]
        for query in QUERIES
        for mode in ("dense", "bm25", "hybrid")
        for where in (None, '{"section": 1}')
        for hits in [searcher.search(query, 8, mode, json.loads(where) if where else None)]
    }


@pytest.fixture
def settings(config):
    """Search settings that make IVF and HNSW exhaustive at this size, so they can equal a fresh build; no centre
    and no calibration, which a change keeps from the last full build and a fresh build fits anew."""
    return replace(
        config,
        index=replace(config.index, calibrate=False, center=False),
        data=replace(config.data, metadata_fields=("section",)),
        search=replace(config.search, nprobe=8, ef_search=256),
    )


@pytest.mark.parametrize("factory, windows", [("Flat", None), ("IVF4,Flat", None), ("HNSW16", None), ("Flat", 8)])
def test_adds_and_deletes_give_what_a_fresh_build_of_the_same_records_gives(settings, tmp_path, factory, windows):
    index = replace(settings.index, factory=factory, train_sample=40, window_tokens=windows)
    chosen = replace(settings, index=index)
    first = [record(i) for i in range(40)]
    build(chosen, write(tmp_path / "a.jsonl", first), tmp_path / "live")
    incoming = [record(40), record(41), record(3, version=1), {**record(7), "section": 3}]  # 2 new, 2 replaced
    summary = add(tmp_path / "live", write(tmp_path / "b.jsonl", incoming), chosen)
    assert (summary.added, summary.replaced, summary.encoded) == (2, 2, 3)  # d7's text is unchanged: reused
    gone = delete(tmp_path / "live", ["d0", "d12", "d41"], chosen)
    assert gone.deleted == 3 and gone.encoded == 0 and gone.documents == 39
    hnsw = factory.startswith("HNSW")  # FAISS cannot remove from its graph: the 2 replaced and 3 deleted are marked
    assert gone.dense == ("updated in place, 5 rows marked deleted" if hnsw else "updated in place")
    marked = open_index(tmp_path / "live").deleted
    assert len(marked) == 5 if hnsw else marked is None
    assert (open_index(tmp_path / "live").manifest.window_tokens is None) == (windows is None)
    replaced = {row["_id"] for row in incoming} | {"d0", "d12", "d41"}
    final = [row for row in first if row["_id"] not in replaced] + [r for r in incoming if r["_id"] != "d41"]
    # A full build in a copy of the folder reads the vectors the changes stored, so what is compared is the indexes,
    # not float sums that some CPUs (seen on an AMD EPYC) round differently when a batch holds other texts.
    shutil.copytree(tmp_path / "live", tmp_path / "fresh")
    rebuilt = build(chosen, write(tmp_path / "final.jsonl", final), tmp_path / "fresh")
    assert rebuilt.encoded == 0
    assert results(tmp_path / "live", chosen) == results(tmp_path / "fresh", chosen)
    live, fresh = open_index(tmp_path / "live", verify=True), open_index(tmp_path / "fresh")
    assert live.doc_ids == fresh.doc_ids and live.documents(["d3"]) == fresh.documents(["d3"])
    assert live.manifest.changes == {
        "since_build": 7,
        "documents_at_build": 40,
        **({"rows_marked_deleted": 5} if hnsw else {}),
    }
    build(chosen, write(tmp_path / "final.jsonl", final), tmp_path / "live")  # a full build starts the count again
    compacted = open_index(tmp_path / "live")
    assert (
        compacted.manifest.changes == {} and compacted.deleted is None and compacted.faiss.ntotal == len(compacted.ids)
    )


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW16"])
def test_a_change_made_from_an_open_index_leaves_it_as_its_readers_had_it(settings, tmp_path, factory):
    chosen = replace(settings, index=replace(settings.index, factory=factory, train_sample=30))
    build(chosen, write(tmp_path / "a.jsonl", [record(i) for i in range(30)]), tmp_path / "live")
    shutil.copytree(tmp_path / "live", tmp_path / "plain")
    opened = open_index(tmp_path / "live")
    probe = opened.faiss.reconstruct_n(0, 4)
    before = (opened.faiss.ntotal, opened.search(probe, 5), opened.search_bm25(QUERIES, 5))
    incoming = write(tmp_path / "b.jsonl", [record(40), record(3, version=1)])
    for folder, held in (("live", opened), ("plain", None)):
        add(tmp_path / folder, incoming, chosen, opened=held)
        delete(tmp_path / folder, ["d5", "d40"], chosen, opened=held)  # `opened` is stale now: CURRENT is read
    assert (opened.faiss.ntotal, opened.search(probe, 5), opened.search_bm25(QUERIES, 5)) == before
    assert results(tmp_path / "live", chosen) == results(tmp_path / "plain", chosen)
    assert len(open_index(tmp_path / "live").doc_ids) == 29


def test_bad_changes_are_refused_and_change_nothing(settings, tmp_path, capsys):
    build(settings, write(tmp_path / "a.jsonl", [record(i) for i in range(12)]), tmp_path / "index")
    before = open_index(tmp_path / "index").path
    with pytest.raises(ChangeError, match="no document\\(s\\) 'd99' in the index"):
        delete(tmp_path / "index", ["d1", "d99"], settings)
    with pytest.raises(MetadataError, match="'section' holds integer values in the index but string values"):
        add(tmp_path / "index", write(tmp_path / "b.jsonl", [{**record(20), "section": "A"}]), settings)
    assert open_index(tmp_path / "index").path == before
    assert cli_main(["delete", str(tmp_path / "index"), "nope"]) == 2
    assert "no document(s) 'nope'" in capsys.readouterr().err
    (tmp_path / "ids.txt").write_text("d1\n\nd2\n")
    assert cli_main(["delete", str(tmp_path / "index"), "--ids-file", str(tmp_path / "ids.txt")]) == 0
    assert cli_main(["add", str(tmp_path / "index"), str(write(tmp_path / "c.jsonl", [record(30)]))]) == 0
    assert open_index(tmp_path / "index").doc_ids[-1] == "d30" and len(open_index(tmp_path / "index").doc_ids) == 11
    with locked_for_writing(tmp_path / "index"):
        with pytest.raises(IndexFolderError, match="another build is writing"):
            delete(tmp_path / "index", ["d3"], settings)


def test_calibration_is_kept_and_marked_stale_past_its_share(config, tmp_path):
    chosen = replace(
        config, calibration=replace(config.calibration, pseudo_queries=40, dev_queries=10, stale_share=0.1)
    )
    build(chosen, write_corpus(tmp_path / "a.jsonl", 60), tmp_path / "index")
    calibrated = open_index(tmp_path / "index").manifest.calibration
    assert calibrated and "stale" not in calibrated
    assert not delete(tmp_path / "index", ["d1", "d2"], chosen).calibration_stale  # 2 of 60: within 10%
    summary = delete(tmp_path / "index", [f"d{i}" for i in range(3, 9)], chosen)
    manifest = open_index(tmp_path / "index").manifest
    assert summary.calibration_stale and manifest.calibration == {**calibrated, "stale": True}
    assert Searcher(tmp_path / "index", chosen).calibration is not None  # still used until htp build fits it again


def test_a_killed_add_leaves_the_old_version_answering_and_a_rerun_completes_it(settings, tmp_path):
    build(settings, write(tmp_path / "a.jsonl", [record(i) for i in range(20)]), tmp_path / "index")
    before = open_index(tmp_path / "index").path
    shards = set((tmp_path / "index").glob("shards/*/shard-*.parquet"))
    many = write(tmp_path / "many.jsonl", [record(i, version=2) for i in range(100, 1600)])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(settings.to_dict()))
    command = [sys.executable, "-m", "pipeline.cli", "add", str(tmp_path / "index"), str(many), "--config"]
    proc = subprocess.Popen([*command, str(config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(set((tmp_path / "index").glob("shards/*/shard-*.parquet")) - shards) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(set((tmp_path / "index").glob("shards/*/shard-*.parquet")) - shards)
    assert 3 <= written < 1500 // 8, "the kill should land mid-change"
    assert open_index(tmp_path / "index").path == before
    assert len(Searcher(tmp_path / "index", settings).search("protein market", 5, "hybrid")) == 5
    summary = add(tmp_path / "index", many, settings)
    assert summary.added == 1500 and summary.encoded <= 1500 - written * 8
    assert open_index(tmp_path / "index").manifest.count == 1520


def test_the_service_adds_and_deletes_documents_behind_its_key(settings, tmp_path):
    build(settings, write(tmp_path / "a.jsonl", [record(i) for i in range(12)]), tmp_path / "index")
    client = TestClient(create_app(tmp_path / "index", settings, api_key="sesame"))
    key = {"X-API-Key": "sesame"}
    assert client.post("/documents", json={"documents": [record(50)]}).status_code == 401
    added = client.post("/documents", json={"documents": [record(50), record(2, version=1)]}, headers=key)
    assert added.status_code == 200 and added.json()["added"] == 1 and added.json()["replaced"] == 1
    assert "version_dir" not in added.json() and added.json()["version"].startswith("20")  # no null, no server path
    assert client.delete("/documents/d5", headers=key).json()["deleted"] == 1
    assert client.delete("/documents/d5", headers=key).status_code == 404
    assert client.delete("/documents", params={"id": "d6"}, headers=key).json()["documents"] == 11
    unknown = client.delete("/documents", params={"id": ["d8", "nope"]}, headers=key)
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["detail"]
    assert len(open_index(tmp_path / "index").doc_ids) == 11  # nothing deleted
    both = client.delete("/documents", params={"id": ["d8", "d9"]}, headers=key).json()
    assert both["deleted"] == 2 and both["documents"] == 9  # one change, one version
    with locked_for_writing(tmp_path / "index"):
        busy = client.delete("/documents/d7", headers=key)
    assert busy.status_code == 409 and "another build is writing" in busy.json()["detail"]
    assert client.post("/documents", json={"documents": [record(6)]}, headers=key).json()["added"] == 1
    refused = client.post("/documents", json={"documents": [{"title": "no id"}]}, headers=key)
    assert refused.status_code == 400
    index = open_index(tmp_path / "index")
    assert client.get("/health", headers=key).json()["version"] == index.path.name  # switched to at once
    hits = client.get("/search", params={"q": record(50)["text"], "k": 3, "mode": "bm25"}, headers=key).json()
    assert hits["hits"][0]["id"] == "d50"
    assert "d50" in index.doc_ids and "d5" not in index.doc_ids and len(index.doc_ids) == 10
    assert np.isfinite(index.faiss.reconstruct_n(0, index.faiss.ntotal)).all()


def test_a_service_without_a_key_takes_no_writes_unless_told_to(settings, tmp_path):
    build(settings, write(tmp_path / "a.jsonl", [record(i) for i in range(4)]), tmp_path / "index")
    keyless = TestClient(create_app(tmp_path / "index", settings))
    for answer in (
        keyless.post("/documents", json={"documents": [record(9)]}),
        keyless.delete("/documents/d1"),
        keyless.delete("/documents", params={"id": "d2"}),
    ):
        assert answer.status_code == 403 and "start it with --api-key" in answer.json()["detail"]
    assert len(open_index(tmp_path / "index").doc_ids) == 4  # nothing changed
    assert keyless.get("/search", params={"q": "Item", "mode": "bm25"}).status_code == 200  # reads stay open
    told = replace(settings, serve=replace(settings.serve, allow_writes_without_key=True))
    assert TestClient(create_app(tmp_path / "index", told)).delete("/documents/d1").json()["deleted"] == 1


def test_one_write_request_is_bounded_in_the_documents_it_may_encode(settings, tmp_path):
    """One POST took 2,000 documents (11.5 s of encoding), limited only by the body size."""
    build(settings, write(tmp_path / "a.jsonl", [record(i) for i in range(4)]), tmp_path / "index")
    bounded = replace(settings, serve=replace(settings.serve, max_write_documents=2, allow_writes_without_key=True))
    client = TestClient(create_app(tmp_path / "index", bounded))
    before = client.get("/health").json()["version"]
    refused = client.post("/documents", json={"documents": [record(i) for i in range(10, 13)]})
    assert refused.status_code == 413 and "3 documents in one request; at most 2" in refused.json()["detail"]
    assert client.get("/health").json()["version"] == before  # nothing written
    assert client.post("/documents", json={"documents": [record(10), record(11)]}).status_code == 200


def test_one_change_adds_and_deletes_and_edge_inputs_are_refused(settings, tmp_path):
    build(settings, write(tmp_path / "a.jsonl", [record(i) for i in range(6)]), tmp_path / "index")
    both = change(tmp_path / "index", write(tmp_path / "b.jsonl", [record(9)]), ["d1", "d1", "d2"], settings)
    assert (both.added, both.deleted, both.documents) == (1, 2, 5)
    empty = write(tmp_path / "empty.jsonl", [{**record(10), "text": "  "}])
    with pytest.raises(ChangeError, match="holds no record with a non-empty text"):
        add(tmp_path / "index", empty, settings)
    with pytest.raises(ChangeError, match="would leave the index with no documents"):
        delete(tmp_path / "index", ["d0", "d3", "d4", "d5", "d9"], settings)
    with pytest.raises(ChangeError, match="both add and delete the same id \\('d9'\\)"):
        change(tmp_path / "index", write(tmp_path / "c.jsonl", [record(9)]), ["d9"], settings)
    with pytest.raises(FileNotFoundError, match="no index at"):
        delete(tmp_path / "typo", ["d0"], settings)
    assert not (tmp_path / "typo").exists()


def test_metadata_of_every_type_is_carried_and_added(config, tmp_path):
    fields = ("section", "tags", "when", "score")
    chosen = replace(
        config, index=replace(config.index, calibrate=False), data=replace(config.data, metadata_fields=fields)
    )

    def row(i: int) -> dict:
        return {**record(i), "tags": ["a", f"t{i % 2}"], "when": f"2020-01-{1 + i:02d}", "score": i + 0.5}

    build(chosen, write(tmp_path / "a.jsonl", [row(i) for i in range(8)]), tmp_path / "index")
    incoming = [{**row(20), "score": 3}, {"_id": "d21", "title": "", "text": "No fields at all here."}]
    add(tmp_path / "index", write(tmp_path / "b.jsonl", incoming), chosen)  # an integer where floats are: taken
    index = open_index(tmp_path / "index")
    assert index.metadata_of(["d20", "d21", "d3"]) == [
        {"section": 0, "tags": ["a", "t0"], "when": "2020-01-21T00:00:00", "score": 3.0},
        {"section": None, "tags": None, "when": None, "score": None},
        {"section": 3, "tags": ["a", "t1"], "when": "2020-01-04T00:00:00", "score": 3.5},
    ]
    hits = Searcher(tmp_path / "index", chosen).search("Item", 20, "bm25", {"when": {"$gte": "2020-01-05"}})
    assert sorted(hit.id for hit in hits) == ["d20", "d4", "d5", "d6", "d7"]


def test_records_added_without_an_indexed_field_hold_null_there_as_at_build(config, tmp_path):
    """Every incoming record lacked the list field (no metadata, explicit nulls, or some fields only): Arrow could
    not cast the all-null column, typed string, to a list (htp add exit 1, POST /documents 500)."""
    fields = ("section", "tags", "when")
    chosen = replace(
        config, index=replace(config.index, calibrate=False), data=replace(config.data, metadata_fields=fields)
    )
    rows = [{**record(i), "tags": ["a"], "when": "2020-01-01"} for i in range(6)]
    build(chosen, write(tmp_path / "a.jsonl", rows), tmp_path / "index")
    bare = [{"_id": "d30", "title": "", "text": "No fields here."}]
    nulls = [{"_id": "d31", "title": "", "text": "Nulls here.", "section": None, "tags": None, "when": None}]
    some = [{"_id": "d32", "title": "", "text": "Some fields here.", "section": 4}]
    for name, records in (("bare", bare), ("nulls", nulls), ("some", some)):
        add(tmp_path / "index", write(tmp_path / f"{name}.jsonl", records), chosen)
    open_writes = replace(chosen, serve=replace(chosen.serve, allow_writes_without_key=True))
    client = TestClient(create_app(tmp_path / "index", open_writes))
    answer = client.post("/documents", json={"documents": [{"_id": "d33", "text": "Posted bare."}]})
    assert answer.status_code == 200, answer.text
    index = open_index(tmp_path / "index")
    empty = {"section": None, "tags": None, "when": None}
    assert index.metadata_of(["d30", "d31", "d32", "d33"]) == [empty, empty, {**empty, "section": 4}, empty]
    assert {hit.id for hit in Searcher(tmp_path / "index", chosen).search("here", 10, "bm25", {"tags": "a"})} == set()


def test_a_metadata_integer_past_64_bits_is_named_as_such(config, tmp_path):
    chosen = replace(
        config, index=replace(config.index, calibrate=False), data=replace(config.data, metadata_fields=("section",))
    )
    build(chosen, write(tmp_path / "a.jsonl", [record(i) for i in range(4)]), tmp_path / "index")
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"_id": "d9", "title": "", "text": "Big.", "section": 123456789012345678901234567890}\n')
    with pytest.raises(MetadataError, match="gives it 1.2345678901234568e\\+29, an integer too large for that"):
        add(tmp_path / "index", huge, chosen)


def test_hnsw_takes_additions_in_place_and_on_disk_ivf_is_refused(settings, tmp_path):
    hnsw = replace(settings, index=replace(settings.index, factory="HNSW16"))
    build(hnsw, write(tmp_path / "a.jsonl", [record(i) for i in range(30)]), tmp_path / "hnsw")
    assert add(tmp_path / "hnsw", write(tmp_path / "b.jsonl", [record(40)]), hnsw).dense == "updated in place"
    index = open_index(tmp_path / "hnsw")
    assert index.ids[-1] == "d40"
    assert (
        delete(tmp_path / "hnsw", [f"d{i}" for i in range(15)], hnsw).dense
        == "updated in place, 15 rows marked deleted"
    )
    compacted = delete(tmp_path / "hnsw", ["d15"], hnsw)  # 16 of 31 rows marked would be past half: rebuilt instead
    assert compacted.dense == "rebuilt" and open_index(tmp_path / "hnsw").deleted is None
    assert open_index(tmp_path / "hnsw").manifest.changes == {"since_build": 17, "documents_at_build": 30}
    index = open_index(tmp_path / "hnsw")
    assert index.search(index.faiss.reconstruct(index.faiss.ntotal - 1)[None, :], 1)[0][0][0] == "d40"
    ivf = replace(settings, index=replace(settings.index, factory="IVF4,Flat", on_disk=True, train_sample=30))
    build(ivf, write(tmp_path / "a.jsonl", [record(i) for i in range(30)]), tmp_path / "ondisk")
    with pytest.raises(ChangeError, match="an on-disk IVF index cannot be changed in place"):
        delete(tmp_path / "ondisk", ["d1"], ivf)
