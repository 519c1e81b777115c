"""`engine: ray` on a real local Ray instance (2 CPUs): the same vectors as a local build, builds that resume each
other's shards, and every document stored exactly once after an encoder actor or the driver is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from conftest import write_corpus
from pipeline.ingest.builder import build
from pipeline.ingest.shards import read_shards
from pipeline.query.searcher import Searcher


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def on_ray(config, **settings):
    """The config with engine ray; one CPU per actor, so two actors reserve every CPU of the instance (reading must
    still go on beside them)."""
    return replace(config, engine="ray", ray=replace(config.ray, **settings))


def stored(shard_dir: Path) -> dict[str, np.ndarray]:
    """Every stored vector by id, refusing an id stored twice."""
    vectors: dict[str, np.ndarray] = {}
    for ids, rows in read_shards(shard_dir):
        for doc, row in zip(ids, rows):
            assert doc not in vectors, f"{doc} stored twice"
            vectors[doc] = row
    return vectors


def shard_count(out: Path) -> int:
    return len(list(out.glob("shards/*/shard-*.parquet")))


def test_a_ray_build_equals_a_local_build_and_each_resumes_the_other(local_ray, config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 40)
    local = build(config, corpus, tmp_path / "local")
    distributed = build(on_ray(config, actors=2), corpus, tmp_path / "ray")
    assert (distributed.encoded, distributed.reused) == (40, 0)
    ours, theirs = stored(distributed.shard_dir), stored(local.shard_dir)
    assert sorted(ours) == sorted(theirs) == sorted(f"d{i}" for i in range(40))
    assert max(float(np.abs(ours[i] - theirs[i]).max()) for i in ours) < 1e-5
    query = "library catalogue of the stock market"
    assert [h.id for h in Searcher(tmp_path / "ray", config).search(query, 10)] == [
        h.id for h in Searcher(tmp_path / "local", config).search(query, 10)
    ]
    grown = build(on_ray(config, actors=1), write_corpus(tmp_path / "50.jsonl", 50), tmp_path / "local")
    assert (grown.encoded, grown.reused) == (10, 40)
    back = build(config, write_corpus(tmp_path / "60.jsonl", 60), tmp_path / "ray")
    assert (back.encoded, back.reused) == (20, 40)


def test_a_killed_encoder_actor_is_restarted_and_every_document_stored_once(local_ray, config, tmp_path):
    total = 300
    corpus = write_corpus(tmp_path / "corpus.jsonl", total)
    out = tmp_path / "index"
    results = []
    job = threading.Thread(target=lambda: results.append(build(on_ray(config, actors=1, batch_size=2), corpus, out)))
    job.start()
    deadline = time.time() + 300
    while time.time() < deadline and shard_count(out) < 3:
        time.sleep(0.02)
    actors = [p for p in psutil.process_iter(["cmdline"]) if "ShardEncoder" in " ".join(p.info["cmdline"] or [])]
    assert actors, "the encoder actor should be running"
    for process in actors:
        os.kill(process.pid, signal.SIGKILL)
    at_kill = shard_count(out)
    job.join(timeout=600)
    assert results, "the build should finish after Ray restarts the actor"
    assert at_kill < total // 2, "the kill should land mid-job"
    assert sorted(stored(results[0].shard_dir)) == sorted(f"d{i}" for i in range(total))
    assert results[0].encoded == total


def test_a_killed_driver_is_resumed_with_every_document_once(local_ray, config, tmp_path):
    total = 400
    corpus = write_corpus(tmp_path / "corpus.jsonl", total)
    settings = on_ray(config, actors=1, batch_size=2)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(settings.to_dict()))
    out = tmp_path / "index"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "build",
            "--config",
            str(config_path),
            "--input",
            str(corpus),
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and shard_count(out) < 3 and driver.poll() is None:
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done = sum(pq.read_metadata(p).num_rows for p in out.glob("shards/*/shard-*.parquet"))
    assert 3 <= done < total, "the kill should land mid-job"
    assert not (out / "CURRENT").exists()
    again = build(settings, corpus, out)
    assert again.reused >= done and again.reused + again.encoded == total
    assert sorted(stored(again.shard_dir)) == sorted(f"d{i}" for i in range(total))


def test_an_on_disk_ivf_index_built_by_ray_tasks_answers_as_one_built_here(local_ray, config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 600)
    ivf = replace(
        config,
        index=replace(
            config.index, factory="IVF8,Flat", train_sample=600, on_disk=True, memory_budget_mb=1, shard_size=64
        ),
    )
    build(ivf, corpus, tmp_path / "here")
    build(on_ray(ivf, actors=1), corpus, tmp_path / "ray")
    query = "library catalogue of the stock market"
    here = Searcher(tmp_path / "here", ivf).search(query, 10, mode="dense")
    there = Searcher(tmp_path / "ray", ivf).search(query, 10, mode="dense")
    assert [h.id for h in there] == [h.id for h in here]
    assert np.allclose([h.score for h in there], [h.score for h in here], atol=1e-5)
