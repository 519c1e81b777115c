"""Damaged parts of an index folder (a shard folder's meta.json, the calibration cache's, a manifest, BM25's
vocabulary, NaN vectors) are refused with one line naming the file, never a traceback or a silent empty answer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexes.errors import IndexValueError
from indexes.lexical import build_bm25, load_bm25, save_bm25, search_bm25
from indexes.store import Manifest
from pipeline.ingest.shards import DIGEST, ShardError, ShardStore, _rows_digest, document_keys


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\x00\x01"])
def test_a_damaged_shard_meta_is_named(tmp_path, content):
    ShardStore(tmp_path / "shards", "cfg")
    (tmp_path / "shards" / "meta.json").write_text(content)
    with pytest.raises(ShardError, match="meta.json"):
        ShardStore(tmp_path / "shards", "cfg")


@pytest.mark.parametrize(
    "content, message", [("{not json", "not valid JSON"), ('["a"]', "not an object"), ("17", "not an object")]
)
def test_a_manifest_that_is_not_an_object_is_refused_in_one_line(content, message):
    with pytest.raises(IndexValueError, match=message):
        Manifest.from_json(content)


def test_a_damaged_bm25_vocabulary_is_refused_by_folder(tmp_path):
    save_bm25(build_bm25(["the cat sat on the mat", "a dog in the park"]), tmp_path / "bm25")
    assert search_bm25(load_bm25(tmp_path / "bm25"), ["cat"], 1)[1][0][0] == 0
    (tmp_path / "bm25" / "vocab.index.json").write_text("{garbage")
    with pytest.raises(IndexValueError, match="BM25 index in .*bm25 is damaged"):
        load_bm25(tmp_path / "bm25")


def test_nan_vectors_are_never_stored_nor_served(tmp_path):
    store = ShardStore(tmp_path / "shards", "cfg")
    ids = ["d0", "d1", "d2"]
    keys = document_keys(ids, [""] * 3, ids)
    bad = np.ones((3, 4), dtype=np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ShardError, match=r"NaN or infinite vectors for 1 document\(s\) \(d1\)"):
        store.write(ids, keys, bad)
    assert store.shards() == []
    path = store.write(ids, keys, np.ones((3, 4), dtype=np.float32))
    table = pq.read_table(path)  # rewritten whole, with valid page and row checksums: only the values are wrong
    flat = np.full(12, np.inf, dtype=np.float32)
    table = table.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(flat), 4))
    table = table.replace_schema_metadata({DIGEST: _rows_digest(ids, keys, flat.reshape(3, 4)).encode()})
    pq.write_table(table, path, write_page_checksum=True)
    with pytest.raises(ShardError, match="holds NaN or infinite vectors"):
        list(ShardStore(tmp_path / "shards", "cfg").gather(keys, store.locate()))


def test_a_shard_rewritten_without_checksums_or_replaced_by_another_is_caught(tmp_path):
    store = ShardStore(tmp_path / "shards", "cfg")
    first, second = ["d0", "d1"], ["d2", "d3"]
    first_keys, second_keys = document_keys(first, ["", ""], first), document_keys(second, ["", ""], second)
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4)
    one, other = store.write(first, first_keys, vectors), store.write(second, second_keys, vectors + 1)
    table = pq.read_table(one)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy().copy()
    flat[0] = 42.0  # another tool rewrites the file whole: valid Parquet, no page checksums, no row checksum
    pq.write_table(table.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(flat), 4)), one)
    with pytest.raises(ShardError, match=r"shard-.*parquet is damaged \(its rows do not match"):
        list(ShardStore(tmp_path / "shards", "cfg").gather(first_keys, store.locate()))

    one.write_bytes(other.read_bytes())  # a copy of another shard put in its place: rebuilding writes it again
    fresh = ShardStore(tmp_path / "shards", "cfg")
    assert first_keys[0] not in fresh.locate()
    assert fresh.write(first, first_keys, vectors) == one
    ids, got = next(fresh.gather(first_keys, fresh.locate()))
    assert ids == first and np.array_equal(got, vectors)


def test_a_format_2_shard_folder_reads_its_own_digestless_shards_and_refuses_a_new_one(tmp_path):
    folder = tmp_path / "shards"
    store = ShardStore(folder, "cfg")
    keys = document_keys(["a", "b"], ["", ""], ["x", "y"])
    path = store.write(["a", "b"], keys, np.ones((2, 4), dtype=np.float32))
    old = pq.read_table(path).replace_schema_metadata(None)  # what format 2 wrote: no digest
    pq.write_table(old, path, write_page_checksum=True)
    (folder / "meta.json").write_text('{"dim": 4, "config_hash": "cfg", "format": 2}')
    upgraded = ShardStore(folder, "cfg")
    assert list(upgraded.gather(keys, upgraded.locate()))[0][0] == ["a", "b"]  # its own shard, read as before
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == 3 and meta["undigested"] == [path.name]
    later = upgraded.write(["c"], document_keys(["c"], [""], ["z"]), np.ones((1, 4), dtype=np.float32))
    pq.write_table(pq.read_table(later).replace_schema_metadata(None), later, write_page_checksum=True)
    again = ShardStore(folder, "cfg")
    with pytest.raises(ShardError, match="rewritten without one"):
        list(again.gather(document_keys(["c"], [""], ["z"]), again.locate()))
