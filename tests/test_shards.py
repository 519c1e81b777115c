"""Embedding shards: atomic Parquet files, resume after SIGKILL with every id exactly once, and refusals that explain."""

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

from pipeline.shards import ShardError, ShardWriter, read_shards

ROOT = Path(__file__).resolve().parents[1]
DIM = 4

# A build loop as the pipeline runs it: resume from the completed shards, then write the rest one shard at a time.
# Each vector holds its document's input position, so misplaced or repeated vectors are visible.
BUILD = """
import sys, time
from pathlib import Path
import numpy as np
from pipeline.shards import ShardWriter
folder, total, size, pause = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ids = [f"d{i}" for i in range(total)]
writer = ShardWriter(folder, shard_size=size, config_hash="cfg", dim=4)
for start in range(writer.resume_offset(ids), total, size):
    chunk = ids[start:start + size]
    writer.write(chunk, np.repeat(np.arange(start, start + len(chunk), dtype=np.float32)[:, None], 4, axis=1))
    time.sleep(pause)
"""


def vectors_for(start: int, count: int) -> np.ndarray:
    return np.repeat(np.arange(start, start + count, dtype=np.float32)[:, None], DIM, axis=1)


def run_build(folder: Path, total: int, size: int, pause: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", BUILD, str(folder), str(total), str(size), str(pause)], cwd=ROOT, env=env)


def write_all(writer: ShardWriter, ids: list[str], size: int) -> None:
    for start in range(writer.resume_offset(ids), len(ids), size):
        chunk = ids[start:start + size]
        writer.write(chunk, vectors_for(start, len(chunk)))


def test_shards_round_trip_with_fixed_size_list_schema(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=3, config_hash="cfg", dim=DIM)
    ids = [f"d{i}" for i in range(7)]
    write_all(writer, ids, 3)
    assert [p.name for p in writer.completed()] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    schema = pq.read_schema(tmp_path / "shard-00000.parquet")
    assert schema.field("id").type == pa.string() and schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    parts = list(read_shards(tmp_path))
    assert [len(i) for i, _ in parts] == [3, 3, 1]
    assert [i for part, _ in parts for i in part] == ids
    vectors = np.concatenate([v for _, v in parts])
    assert vectors.dtype == np.float32 and np.array_equal(vectors, vectors_for(0, 7))
    assert json.loads((tmp_path / "meta.json").read_text()) == {"dim": DIM, "shard_size": 3, "config_hash": "cfg"}


def test_dim_is_taken_from_the_first_shard_when_not_given(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=2, config_hash="cfg")
    writer.write(["a", "b"], np.ones((2, 5)))
    assert json.loads((tmp_path / "meta.json").read_text())["dim"] == 5
    with pytest.raises(ShardError, match="vectors have 4 dimensions but the shards .* have 5"):
        ShardWriter(tmp_path, shard_size=2, config_hash="cfg").write(["c", "d"], np.ones((2, 4)))


def test_resume_offset_counts_completed_documents(tmp_path):
    ids = [f"d{i}" for i in range(10)]
    writer = ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=DIM)
    writer.write(ids[:4], vectors_for(0, 4))
    writer.write(ids[4:8], vectors_for(4, 4))
    resumed = ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=DIM)
    assert resumed.resume_offset(ids) == 8
    write_all(resumed, ids, 4)
    assert [i for part, _ in read_shards(tmp_path) for i in part] == ids
    assert ShardWriter(tmp_path, shard_size=4, config_hash="cfg").resume_offset(ids) == 10


def test_changed_input_is_refused(tmp_path):
    ids = [f"d{i}" for i in range(8)]
    write_all(ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=DIM), ids[:4], 4)
    writer = ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=DIM)
    message = f"input changed since the interrupted build: .*shard-00000.parquet .*; delete {tmp_path} or use a new out dir"
    with pytest.raises(ShardError, match=message):
        writer.resume_offset(["x"] + ids[1:])
    with pytest.raises(ShardError, match="input changed"):
        writer.resume_offset(ids[:3])


def test_other_config_hash_shard_size_or_dim_is_refused(tmp_path):
    ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=DIM).write(["a"], vectors_for(0, 1))
    with pytest.raises(ShardError, match="holds shards of another configuration \\(hash cfg, this build other\\)"):
        ShardWriter(tmp_path, shard_size=4, config_hash="other")
    with pytest.raises(ShardError, match="written with shard_size 4, this build uses 8"):
        ShardWriter(tmp_path, shard_size=8, config_hash="cfg")
    with pytest.raises(ShardError, match="holds 4-dimensional vectors, this build makes 8"):
        ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=8)


def test_nothing_follows_a_short_shard(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=4, config_hash="cfg", dim=DIM)
    writer.write(["a", "b"], vectors_for(0, 2))
    with pytest.raises(ShardError, match="the last shard .* is short"):
        writer.write(["c"], vectors_for(2, 1))
    with pytest.raises(ValueError, match="at most 4 documents"):
        ShardWriter(tmp_path / "other", shard_size=4, config_hash="cfg").write(list("abcde"), vectors_for(0, 5))
    with pytest.raises(ValueError, match="one vector per id"):
        writer.write(["a", "b"], vectors_for(0, 3))


def test_leftover_temp_files_are_ignored_and_deleted(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=2, config_hash="cfg", dim=DIM)
    writer.write(["a", "b"], vectors_for(0, 2))
    leftover = tmp_path / "shard-00001.parquet.tmp"
    leftover.write_bytes(b"PAR1 half a shard")
    assert [ids for ids, _ in read_shards(tmp_path)] == [["a", "b"]]
    assert leftover.exists()
    resumed = ShardWriter(tmp_path, shard_size=2, config_hash="cfg", dim=DIM)
    assert not leftover.exists() and resumed.resume_offset(["a", "b", "c"]) == 2


def test_a_gap_in_the_numbering_is_refused(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=1, config_hash="cfg", dim=DIM)
    for i in range(3):
        writer.write([f"d{i}"], vectors_for(i, 1))
    (tmp_path / "shard-00001.parquet").unlink()
    with pytest.raises(ShardError, match="lacks shard-00001.parquet but has shard-00002.parquet"):
        list(read_shards(tmp_path))


def test_sigkill_then_rerun_gives_every_id_once_in_order(tmp_path):
    total, size = 900, 3
    proc = run_build(tmp_path, total, size, pause=0.01)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(tmp_path.glob("shard-*.parquet"))) < 5:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = len(list(tmp_path.glob("shard-*.parquet")))
    assert 5 <= done < total // size, "the kill should land mid-build"
    assert [i for ids, _ in read_shards(tmp_path) for i in ids] == [f"d{i}" for i in range(done * size)]

    assert run_build(tmp_path, total, size, pause=0).wait(timeout=120) == 0
    parts = list(read_shards(tmp_path))
    ids = [i for part, _ in parts for i in part]
    assert ids == [f"d{i}" for i in range(total)]
    assert np.array_equal(np.concatenate([v for _, v in parts]), vectors_for(0, total))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_shard_with_flipped_bytes_is_refused_by_name(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=64, config_hash="h")
    path = writer.write([f"d{i}" for i in range(64)], np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the embedding column's data page
    data[middle] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"{path.name} is damaged"):
        list(read_shards(tmp_path))
