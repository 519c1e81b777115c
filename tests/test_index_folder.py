"""The index folder under hostile use: concurrent builds, foreign folders, leftovers of killed builds, a
tampered CURRENT. Nothing the project did not create is deleted, and every refusal says why."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import write_corpus
from indexes import store
from indexes.owned import OWNED
from indexes.store import CURRENT, IndexFolderError, locked_for_writing, open_index
from pipeline.cli import main as cli_main
from pipeline.config import Config
from pipeline.ingest.builder import build
from pipeline.query.searcher import Searcher


@pytest.fixture
def quick(config: Config) -> Config:
    """No calibration: these tests are about the folder, not the vectors."""
    return replace(config, index=replace(config.index, calibrate=False))


def test_a_second_build_fails_clearly_while_another_holds_the_folder(quick, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 10)
    out = tmp_path / "index"
    with locked_for_writing(out):
        with pytest.raises(IndexFolderError, match="another build is writing"):
            build(quick, corpus, out)
    assert build(quick, corpus, out).documents == 10


def test_a_non_empty_folder_that_is_not_an_index_is_refused_and_left_alone(quick, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 10)
    out = tmp_path / "mine"
    (out / "versions" / "holiday").mkdir(parents=True)
    (out / "versions" / "holiday" / "photo.txt").write_text("keep me")
    with pytest.raises(IndexFolderError, match="not an index folder"):
        build(quick, corpus, out)
    assert sorted(p.name for p in out.rglob("*")) == ["holiday", "photo.txt", "versions"]
    build(quick, corpus, out, allow_foreign=True)
    build(quick, write_corpus(tmp_path / "other.jsonl", 12, seed=1), out, allow_foreign=True)
    assert (out / "versions" / "holiday" / "photo.txt").read_text() == "keep me"
    assert len(Searcher(out, quick).search("protein market", 3, mode="bm25")) == 3


def test_leftovers_of_killed_builds_and_shards_of_earlier_inputs_are_removed(quick, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    out = tmp_path / "index"
    first = build(quick, write_corpus(tmp_path / "a.jsonl", 10), out)
    (out / "versions" / ".tmp-killed").mkdir()
    (out / "versions" / ".tmp-killed" / OWNED).touch()  # what a build writes first into its scratch folder
    (out / "versions" / ".tmp-killed" / "index.faiss").write_bytes(b"half")
    earlier_layout = out / "shards" / "0123456789abcdef-0123456789abcdef"
    earlier_layout.mkdir()
    (earlier_layout / "meta.json").write_text('{"dim": 8, "config_hash": "0123456789abcdef", "format": 1}')
    second = build(quick, write_corpus(tmp_path / "b.jsonl", 11, seed=1), out)
    printed = caplog.text
    assert "removed 1 unfinished version" in printed and "removed 1 shard folder" in printed
    assert f"dropped the stored vectors of {first.documents} document(s)" in printed
    assert not (out / "versions" / ".tmp-killed").exists() and not earlier_layout.exists()
    assert second.shard_dir == first.shard_dir and second.dropped == 10 and second.encoded == 11
    assert open_index(out).manifest.count == 11


def test_folders_the_package_did_not_write_are_never_deleted(quick, tmp_path):
    out = tmp_path / "mine"
    theirs = [
        out / "versions" / "20200101T000000-notes",
        out / "versions" / ".tmp-drafts",
        out / "shards" / "0123456789abcdef",
        out / "shards" / "0123456789abcdef-fedcba9876543210",
    ]
    for folder in theirs:
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("the user's")
    for seed in range(3):  # each build prunes older versions, leftovers and stale shard folders
        build(quick, write_corpus(tmp_path / "a.jsonl", 6, seed=seed), out, allow_foreign=True)
    assert all((folder / "keep.txt").read_text() == "the user's" for folder in theirs)
    assert open_index(out).manifest.count == 6


def test_folders_that_only_look_like_ours_are_left_and_named(quick, tmp_path, caplog):
    """A plain build deleted a user's shards/0123456789abcdef/ because its meta.json looked like shard metadata:
    a folder without the marker is only ours when it holds nothing but what such a folder holds."""
    caplog.set_level(logging.INFO, logger="pipeline")
    out = tmp_path / "index"
    build(quick, write_corpus(tmp_path / "a.jsonl", 6), out)
    lookalike = out / "shards" / "0123456789abcdef"
    lookalike.mkdir()
    (lookalike / "meta.json").write_text('{"dim": 8, "config_hash": "0123456789abcdef"}')
    (lookalike / "thesis.tex").write_text("the user's own file")
    version = out / "versions" / "20200101T000000-mine"
    version.mkdir()
    (version / "manifest.json").write_text('{"encoder": {"model": "mine"}}')
    (version / "notes.txt").write_text("the user's own file")
    build(quick, write_corpus(tmp_path / "b.jsonl", 7, seed=1), out)
    assert (lookalike / "thesis.tex").is_file() and (version / "notes.txt").is_file()
    assert f"left {lookalike}: htp-index cannot show it made it" in caplog.text
    assert "removed 1 shard folder" not in caplog.text


def test_a_version_half_removed_by_a_killed_prune_is_removed_by_the_next_build(quick, tmp_path):
    out = tmp_path / "index"
    first = build(quick, write_corpus(tmp_path / "a.jsonl", 6), out).version_dir
    half = first.with_name("20200101T000000-halfgone")
    shutil.copytree(first, half)
    (half / "manifest.json").unlink()  # the prune was killed after removing the manifest
    (half / "ids.parquet").unlink()
    build(quick, write_corpus(tmp_path / "b.jsonl", 6, seed=1), out)
    assert not half.exists()


def test_current_naming_a_path_outside_the_index_is_refused(quick, tmp_path):
    out = tmp_path / "index"
    build(quick, write_corpus(tmp_path / "a.jsonl", 10), out)
    (out / CURRENT).write_text("../..\n")
    with pytest.raises(ValueError, match="not a version of this index"):
        open_index(out)


def test_replaced_input_with_the_same_timestamp_is_read_anew(quick, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 10)
    out = tmp_path / "index"
    build(quick, corpus, out)
    stamp = corpus.stat()
    write_corpus(tmp_path / "corpus.jsonl", 10, seed=7)
    os.utime(corpus, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    again = build(quick, corpus, out)
    assert again.encoded == 10 and again.reused == 0
    stored = open_index(out).documents(["d0"])[0]["text"]
    assert stored == json.loads(corpus.read_text().splitlines()[0])["text"]


def flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.fixture
def built(quick, tmp_path) -> Path:
    out = tmp_path / "index"
    build(quick, write_corpus(tmp_path / "a.jsonl", 40), out)
    return out


def test_flipped_bytes_in_the_faiss_index_are_refused_at_open(built):
    version = open_index(built).path
    flip(version / "index.faiss")
    with pytest.raises(ValueError, match="index.faiss is damaged"):
        open_index(built)


def test_a_version_this_process_wrote_opens_without_hashing_it_again(built, monkeypatch):
    hashed: list[str] = []
    real = store._sha256
    monkeypatch.setattr(store, "_sha256", lambda path: hashed.append(path.name) or real(path))
    open_index(built)  # its files were hashed as they were written (a service opening the version its change wrote)
    assert hashed == ["manifest.json"]  # checked against CURRENT at every open: a few hundred bytes
    touched = open_index(built).path / "index.faiss"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a file changed since: hashed again
    open_index(built)
    assert "index.faiss" in hashed


def test_edited_documents_are_refused_when_read(built):
    version = open_index(built).path
    flip(version / "docs.parquet", 0.3)
    with pytest.raises(ValueError, match="docs.parquet is damaged"):
        open_index(built).documents([f"d{i}" for i in range(40)])


def test_a_tampered_manifest_is_refused(built):
    manifest = open_index(built).path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"] = "someone-else"
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True))
    with pytest.raises(ValueError, match="manifest.json is damaged"):
        open_index(built)


def test_htp_verify_checks_every_file(built, capsys):
    assert cli_main(["verify", str(built)]) == 0
    assert "files match their checksums" in capsys.readouterr().out
    bm25_file = sorted((open_index(built).path / "bm25").glob("*.npy"))[0]
    flip(bm25_file, 0.9)
    assert cli_main(["verify", str(built)]) == 2
    assert f"{bm25_file.name} is damaged" in capsys.readouterr().err


def test_memory_mapped_files_are_checked_at_open(built):
    bm25_file = sorted((open_index(built).path / "bm25").glob("*.npy"))[0]
    flip(bm25_file, 0.9)
    with pytest.raises(ValueError, match=f"{bm25_file.name} is damaged \\(checksum mismatch"):
        open_index(built)


def test_on_disk_ivf_lists_are_checked_at_open(quick, tmp_path):
    ivf = replace(quick, index=replace(quick.index, factory="IVF2,Flat", train_sample=40, on_disk=True))
    build(ivf, write_corpus(tmp_path / "a.jsonl", 40), tmp_path / "disk")
    flip(open_index(tmp_path / "disk").path / "index.ivfdata", 0.5)
    with pytest.raises(ValueError, match="index.ivfdata is damaged"):
        open_index(tmp_path / "disk")


def test_a_memory_mapped_file_cut_under_an_open_index_is_refused_at_its_next_search(built):
    index = open_index(built)
    assert index.search_bm25(["protein"], 3)[0]
    largest = max((index.path / "bm25").glob("*.npy"), key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)
    with pytest.raises(ValueError, match=f"{largest.name} is damaged .* bytes now"):
        index.search_bm25(["protein"], 3)
    with pytest.raises(ValueError, match=f"{largest.name} is damaged"):
        index.search(np.ones((1, index.faiss.d), dtype=np.float32), 3)


def rewrite_manifest(index_dir: Path, change) -> None:
    """Edit the live manifest and re-point CURRENT at its new digest, as someone with write access could."""
    version = index_dir / "versions" / (index_dir / CURRENT).read_text().split()[0]
    data = json.loads((version / "manifest.json").read_text())
    change(data)
    (version / "manifest.json").write_text(json.dumps(data))
    digest = hashlib.sha256((version / "manifest.json").read_bytes()).hexdigest()
    (index_dir / CURRENT).write_text(f"{version.name}\n{digest}\n")


@pytest.mark.parametrize(
    "field, message", [("count", "it says 41 vectors"), ("dimension", "it says 40 vectors of dimension 33")]
)
def test_manifest_counts_are_checked_against_the_files(built, field, message):
    rewrite_manifest(built, lambda data: data.update({field: data[field] + 1}))
    with pytest.raises(ValueError, match=f"manifest.json is damaged \\({message}"):
        open_index(built)


def test_calibration_arrays_are_checked_against_the_index(quick, built):
    settings = {"adapter": True, "bias_weight": 0.5, "fusion": "score", "dense_weight": 0.2}
    rewrite_manifest(built, lambda data: data.update(calibration=settings, parts=[*data["parts"], "calibration"]))
    with pytest.raises(ValueError, match="manifest.json is damaged \\(it names calibration.npz but lists no checksum"):
        open_index(built)
    path = built / "versions" / (built / CURRENT).read_text().split()[0] / "calibration.npz"
    for arrays, message in [
        ({"query_mean": np.zeros(32, np.float32)}, "calibration is damaged \\(KeyError"),
        (
            {"query_mean": np.zeros(5, np.float32), "adapter": np.zeros((32, 32), np.float32)},
            "calibration.npz is damaged \\(arrays of shape \\{'query_mean': \\(5,\\)\\}",
        ),
    ]:
        np.savez(path, **arrays)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rewrite_manifest(
            built,
            lambda data: (
                data["checksums"].update({"calibration.npz": digest}),
                data["sizes"].update({"calibration.npz": path.stat().st_size}),
            ),
        )
        with pytest.raises(ValueError, match=message):
            Searcher(built, quick)


def test_permuted_ids_are_refused(built):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = open_index(built).path / "ids.parquet"
    ids = pq.read_table(path).column("id").to_pylist()
    pq.write_table(pa.table({"id": pa.array(ids[1:] + ids[:1], pa.string())}), path, write_page_checksum=True)
    with pytest.raises(ValueError, match="ids.parquet is damaged"):
        open_index(built)


def test_loading_the_model_is_reported_apart_from_encoding(quick, tmp_path, caplog, monkeypatch):
    """A first build's one-off model load (de-quantisation) was counted as encoding in the summary's shares."""
    from htp import encoder as encoder_module

    class SlowToLoad(encoder_module.HTPEncoder):
        def __init__(self, *args, **kwargs) -> None:
            time.sleep(1.0)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(encoder_module, "HTPEncoder", SlowToLoad)
    caplog.set_level(logging.INFO, logger="pipeline")
    summary = build(quick, write_corpus(tmp_path / "a.jsonl", 10), tmp_path / "index")
    assert "model: " in caplog.text and caplog.text.index("model: ") < caplog.text.index("encode: 10 documents")
    assert summary.encode_seconds < summary.seconds - 1.0  # the second of loading is outside encoding
