"""Keyed embedding shards: atomic Parquet files, resume after SIGKILL with every document exactly once, pruning of
documents no longer in the input, and refusals that explain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ingest.shards import FORMAT, ShardError, ShardStore, document_key, document_keys

ROOT = Path(__file__).resolve().parents[1]
DIM = 4

# A build loop as the pipeline runs it: encode the documents whose keys are not stored, one shard at a time.
# Each vector holds its document's input position, so misplaced or repeated vectors are visible.
BUILD = """
import sys, time
from pathlib import Path
import numpy as np
from pipeline.ingest.shards import ShardStore, document_keys
folder, total, size, pause = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ids = [f"d{i}" for i in range(total)]
keys = document_keys(ids, [""] * total, ids)
store = ShardStore(folder, "cfg")
store.remove_leftovers()
located = store.locate()
missing = [i for i, key in enumerate(keys) if key not in located]
for start in range(0, len(missing), size):
    rows = missing[start:start + size]
    store.write([ids[i] for i in rows], [keys[i] for i in rows], np.repeat(np.array(rows, np.float32)[:, None], 4, 1))
    time.sleep(pause)
"""


def corpus(total: int) -> tuple[list[str], list[str]]:
    ids = [f"d{i}" for i in range(total)]
    return ids, document_keys(ids, [""] * total, ids)


def vectors_for(rows) -> np.ndarray:
    return np.repeat(np.asarray(rows, dtype=np.float32)[:, None], DIM, axis=1)


def write_rows(store: ShardStore, ids: list[str], keys: list[str], rows) -> Path:
    return store.write([ids[i] for i in rows], [keys[i] for i in rows], vectors_for(rows))


def gathered(store: ShardStore, keys: list[str]) -> tuple[list[str], np.ndarray]:
    parts = list(store.gather(keys, store.locate(), batch=3))
    return [i for ids, _ in parts for i in ids], np.concatenate([v for _, v in parts])


def run_build(folder: Path, total: int, size: int, pause: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(folder), str(total), str(size), str(pause)], cwd=ROOT, env=env
    )


def test_keys_change_with_id_title_or_text():
    base = document_key("a", "t", "x")
    assert len({base, document_key("b", "t", "x"), document_key("a", "u", "x"), document_key("a", "t", "y")}) == 4
    assert document_key("a", "t", "x") == base


def test_shards_round_trip_and_gather_in_any_order(tmp_path):
    ids, keys = corpus(7)
    store = ShardStore(tmp_path, "cfg")
    write_rows(store, ids, keys, [4, 5, 6])
    write_rows(store, ids, keys, [0, 1, 2, 3])
    shard = store.shards()[0]
    schema = pq.read_schema(shard)
    assert schema.field("id").type == pa.string() and schema.field("key").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    order = [6, 0, 3, 5, 1, 2, 4]
    got_ids, vectors = gathered(store, [keys[i] for i in order])
    assert got_ids == [ids[i] for i in order] and np.array_equal(vectors, vectors_for(order))
    assert json.loads((tmp_path / "meta.json").read_text()) == {"dim": DIM, "config_hash": "cfg", "format": FORMAT}


def test_a_multi_vector_document_keeps_its_rows_together(tmp_path):
    store = ShardStore(tmp_path, "cfg")
    store.write(["a", "a", "b", "c", "c", "c"], ["ka", "ka", "kb", "kc", "kc", "kc"], vectors_for(range(6)))
    located = store.locate()
    assert {k: v[1:] for k, v in located.items()} == {"ka": (0, 2), "kb": (2, 1), "kc": (3, 3)}
    parts = list(store.gather(["kc", "ka"], located))
    assert parts[0][0] == ["c", "c", "c", "a", "a"] and np.array_equal(parts[0][1], vectors_for([3, 4, 5, 0, 1]))
    assert {k: v[1:] for k, v in store.locate(wanted={"kc", "kz"}).items()} == {"kc": (3, 3)}  # only those asked
    assert store.locate(wanted=set()) == {}


def test_writing_the_same_documents_again_writes_the_same_file(tmp_path):
    ids, keys = corpus(4)
    store = ShardStore(tmp_path, "cfg")
    first = write_rows(store, ids, keys, [0, 1])
    stamp = first.stat().st_mtime_ns
    assert write_rows(store, ids, keys, [0, 1]) == first and first.stat().st_mtime_ns == stamp
    assert len(store.shards()) == 1


def test_other_config_hash_or_dim_is_refused(tmp_path):
    ids, keys = corpus(2)
    write_rows(ShardStore(tmp_path, "cfg"), ids, keys, [0])
    with pytest.raises(ShardError, match="holds shards of another configuration \\(hash cfg, this build other\\)"):
        ShardStore(tmp_path, "other")
    with pytest.raises(ShardError, match="vectors have 8 dimensions but the shards .* have 4"):
        ShardStore(tmp_path, "cfg").write(["d1"], [keys[1]], np.ones((1, 8)))
    with pytest.raises(ValueError, match="one vector and one key per id"):
        ShardStore(tmp_path, "cfg").write(["d1"], [keys[1]], np.ones((2, 4)))


@pytest.mark.parametrize("dim", [DIM + 1, 0, "4", True])
def test_a_meta_json_edited_to_another_dim_is_refused(tmp_path, dim):
    """meta.json edited to a wrong dim was accepted: reads went on at the shards' own width, writes blamed the
    new vectors."""
    ids, keys = corpus(3)
    write_rows(ShardStore(tmp_path, "cfg"), ids, keys, [0, 1, 2])
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "dim": dim}))
    with pytest.raises(ShardError, match="meta.json (says|gives the vectors' dimension as)"):
        store = ShardStore(tmp_path, "cfg")
        gathered(store, keys)


def test_a_key_not_stored_is_refused_by_name(tmp_path):
    ids, keys = corpus(3)
    store = ShardStore(tmp_path, "cfg")
    write_rows(store, ids, keys, [0])
    with pytest.raises(ShardError, match=f"no vectors for document key {keys[2]}"):
        list(store.gather([keys[0], keys[2]], store.locate()))


def test_leftover_temp_files_are_ignored_and_removed(tmp_path):
    ids, keys = corpus(2)
    store = ShardStore(tmp_path, "cfg")
    write_rows(store, ids, keys, [0, 1])
    leftover = tmp_path / "shard-0123.parquet.tmp"
    leftover.write_bytes(b"PAR1 half a shard")
    assert len(store.shards()) == 1 and set(store.locate()) == set(keys)
    assert store.remove_leftovers() == 1 and not leftover.exists()


def test_prune_drops_dead_documents_and_keeps_live_ones(tmp_path):
    ids, keys = corpus(12)
    store = ShardStore(tmp_path, "cfg")
    gone = write_rows(store, ids, keys, [0, 1, 2])  # every document dropped: deleted
    mostly = write_rows(store, ids, keys, [3, 4, 5, 6])  # one of four live: rewritten with it
    kept = write_rows(store, ids, keys, [7, 8, 9])  # all live: kept as it is
    partly = write_rows(store, ids, keys, [10, 11])  # one dead: rewritten without it
    copy = store.write(["d7", "d11"], [keys[7], keys[11]], vectors_for([7, 11]))  # second copies (a crash mid-rewrite)
    live = {keys[i] for i in (5, 7, 8, 9, 11)}
    assert store.prune(live, store.locate()) == 7
    assert not gone.exists() and not mostly.exists() and not partly.exists() and kept.exists()
    located = store.locate()
    assert set(located) == live and store.prune(live, located) == 0
    stored = [k for path in store.shards() for k in pq.read_table(path, columns=["key"]).column("key").to_pylist()]
    assert sorted(stored) == sorted(live), f"every live document once ({copy.name} or its twin removed)"
    got_ids, vectors = gathered(store, [keys[i] for i in (9, 5, 7)])
    assert got_ids == ["d9", "d5", "d7"] and np.array_equal(vectors, vectors_for([9, 5, 7]))


def test_sigkill_then_rerun_gives_every_document_once(tmp_path):
    total, size = 900, 3
    proc = run_build(tmp_path, total, size, pause=0.01)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(tmp_path.glob("shard-*.parquet"))) < 5:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = len(list(tmp_path.glob("shard-*.parquet")))
    assert 5 <= done < total // size, "the kill should land mid-build"
    ids, keys = corpus(total)
    assert len(ShardStore(tmp_path, "cfg").locate()) == done * size

    assert run_build(tmp_path, total, size, pause=0).wait(timeout=120) == 0
    store = ShardStore(tmp_path, "cfg")
    stored = [k for path in store.shards() for k in pq.read_table(path, columns=["key"]).column("key").to_pylist()]
    assert sorted(stored) == sorted(keys), "every document stored exactly once"
    got_ids, vectors = gathered(store, keys)
    assert got_ids == ids and np.array_equal(vectors, vectors_for(range(total)))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_shard_with_flipped_bytes_is_refused_by_name(tmp_path):
    store = ShardStore(tmp_path, "h")
    ids = [f"d{i}" for i in range(64)]
    path = store.write(ids, ids, np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the embedding column's data page
    data[middle] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"{path.name} is damaged"):
        list(store.gather(ids, store.locate()))
