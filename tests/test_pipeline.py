"""Build -> query through the pipeline on the tiny local model: search equals raw FAISS, mismatches refused,
resume after SIGKILL, atomic swap under a reader, CLI errors."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest
import yaml

from conftest import write_corpus
from htp.registry import MODELS, installed
from pipeline.cli import main as cli_main
from pipeline.ingest.builder import build
from pipeline.ingest.shards import read_shards
from pipeline.query.searcher import EncoderMismatchError, Searcher
from pipeline.vectors import prepare


def test_search_equals_raw_faiss_on_the_same_vectors(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 30)
    summary = build(config, corpus)
    assert summary.documents == 30 and summary.encoded == 30
    index_dir = Path(config.paths.index_dir)
    ids, vectors = zip(*read_shards(summary.shard_dir))
    ids = [i for part in ids for i in part]
    center = np.load(summary.version_dir / "center.npy")
    docs = prepare(np.concatenate(vectors), center)
    raw = faiss.IndexFlatIP(docs.shape[1])
    raw.add(docs)
    searcher = Searcher(index_dir, config)
    query = "library catalogue of the stock market"
    q = prepare(searcher.encoder.encode([query], kind="query"), center)
    stored = np.load(summary.version_dir / "calibration.npz")
    q = prepare(q + q @ stored["adapter"], None) if summary.calibration["adapter"] else q
    q = prepare(q - summary.calibration["bias_weight"] * stored["query_mean"], None)
    scores, rows = raw.search(q, 5)
    got = searcher.dense([query], 5)[0]
    assert [i for i, _ in got] == [ids[r] for r in rows[0]]
    assert np.allclose([s for _, s in got], scores[0], atol=1e-6)
    hits = searcher.search(query, 5, mode="dense")
    assert [h.id for h in hits] == [ids[r] for r in rows[0]] and hits[0].title.startswith("Doc")


def test_modes_return_k_hits(config, tmp_path):
    build(config, write_corpus(tmp_path / "corpus.jsonl", 20))
    searcher = Searcher(Path(config.paths.index_dir), config)
    for mode in ("dense", "bm25", "hybrid"):
        hits = searcher.search("protein market", 7, mode=mode)
        assert [h.rank for h in hits] == list(range(1, 8))
        assert len({h.id for h in hits}) == 7


def test_mismatched_query_encoder_is_refused(config, tmp_path):
    build(config, write_corpus(tmp_path / "corpus.jsonl", 10))
    other = replace(config, encoder=replace(config.encoder, method="vanilla-mean"))
    with pytest.raises(EncoderMismatchError, match="method: index has 'htp', config has 'vanilla-mean'"):
        Searcher(Path(config.paths.index_dir), other)
    runtime_only = replace(config, encoder=replace(config.encoder, batch_tokens=999))
    Searcher(Path(config.paths.index_dir), runtime_only)


def test_rebuild_swaps_atomically_while_a_reader_holds_the_old_index(config, tmp_path):
    build(config, write_corpus(tmp_path / "a.jsonl", 12, seed=1))
    index_dir = Path(config.paths.index_dir)
    old = Searcher(index_dir, config)
    before = old.search("stock park", 5, mode="dense")
    build(config, write_corpus(tmp_path / "b.jsonl", 20, seed=2))
    assert [h.id for h in old.search("stock park", 5, mode="dense")] == [h.id for h in before]
    new = Searcher(index_dir, config)
    assert new.index.manifest.count == 20 and old.index.manifest.count == 12


def test_build_resumes_after_sigkill_with_every_document_once(config, tmp_path):
    total = 2000
    corpus = write_corpus(tmp_path / "corpus.jsonl", total)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    index_dir = Path(config.paths.index_dir)
    command = [sys.executable, "-m", "pipeline.cli", "build", "--config", str(config_path), "--input", str(corpus)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(index_dir.glob("shards/*/shard-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(index_dir.glob("shards/*/shard-*.parquet")))
    assert 3 <= done_before < total // 8, "the kill should land mid-build"
    assert not (index_dir / "CURRENT").exists()
    summary = build(config, corpus)
    assert summary.reused == done_before * 8 and summary.encoded == total - done_before * 8
    ids = sorted(i for part, _ in read_shards(summary.shard_dir) for i in part)
    assert ids == sorted(f"d{i}" for i in range(total)), "every document stored exactly once"
    assert Searcher(index_dir, config).index.manifest.count == total


def test_cli_reports_bad_input_in_one_line(config, tmp_path, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    missing = tmp_path / "nope.jsonl"
    assert cli_main(["build", "--config", str(config_path), "--input", str(missing)]) == 2
    assert "htp build: error:" in capsys.readouterr().err
    assert cli_main(["query", str(tmp_path / "no-index"), "anything"]) == 2
    assert "no index at" in capsys.readouterr().err


def test_cli_build_and_query_keep_library_debug_logs_quiet(config, tmp_path, caplog, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    index_dir = tmp_path / "index"
    assert cli_main(["build", "--config", str(config_path), "--input", str(corpus), "--out", str(index_dir)]) == 0
    assert cli_main(["query", str(index_dir), "anything", "--mode", "hybrid"]) == 0
    assert "rank" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.name.startswith("bm25s") and r.levelno < logging.WARNING]


def test_ivf_pq_build_trains_on_a_sample(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 300)
    too_few = replace(config, index=replace(config.index, factory="IVF4,PQ4", train_sample=200))
    with pytest.raises(ValueError, match="training 'IVF4,PQ4' on 200 vectors failed: Number of training points"):
        build(too_few, corpus)
    ivf = replace(config, index=replace(config.index, factory="IVF4,PQ4", train_sample=300))
    summary = build(ivf, corpus)
    assert summary.factory == "IVF4,PQ4"
    hits = Searcher(Path(config.paths.index_dir), ivf).search("stock market report", 5, mode="dense")
    assert len(hits) == 5


def test_cli_prints_stage_summaries_once_on_stdout(config, tmp_path, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump({**config.to_dict(), "index": {**config.to_dict()["index"], "calibrate": False}})
    )
    corpus = write_corpus(tmp_path / "corpus.jsonl", 6)
    for _ in range(2):
        assert (
            cli_main(["build", "--config", str(config_path), "--input", str(corpus), "--out", str(tmp_path / "i")]) == 0
        )
        out, err = capsys.readouterr()
        assert out.count("load: 6 documents") == 1 and out.count("index: 6 vectors") == 1
        assert "load:" not in err


def test_cli_help_info_bm25_queries_and_deletes_import_no_torch(config, tmp_path):
    out = tmp_path / "index"
    build(replace(config, index=replace(config.index, calibrate=False)), write_corpus(tmp_path / "c.jsonl", 6), out)
    probe = (
        "import sys\nfrom pipeline.cli import main\nimport contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['info', {str(out)!r}])\n"
        "    main(['models'])\n"
        f"    assert main(['query', {str(out)!r}, 'report', '--mode', 'bm25']) == 0\n"
        f"    assert main(['delete', {str(out)!r}, 'd1']) == 0\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'spacy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_htp_models_lists_the_registry_with_what_is_installed(capsys):
    assert cli_main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(MODELS)
    assert lines["smollm2-135m"].endswith("installed") and "exit 28, window [1, 2)" in lines["smollm2-135m"]
    assert (
        "window [1, 3)" in lines["llama3-8b"]
        and "huggingface-cli download meta-llama/Meta-Llama-3-8B" in lines["llama3-8b"]
    )
    assert installed("smollm2-135m") and not installed("gemma2-9b")


def test_an_index_from_before_separate_prompt_keeps_its_glued_queries(config, tmp_path):
    summary = build(
        replace(config, index=replace(config.index, calibrate=False)),
        write_corpus(tmp_path / "c.jsonl", 6),
        tmp_path / "index",
    )
    manifest_path = summary.version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["encoder"]["separate_prompt"] is True  # new builds record it
    assert Searcher(tmp_path / "index")._encoder_config.separate_prompt is True
    del manifest["encoder"]["separate_prompt"]  # as written before the key existed
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "index" / "CURRENT").write_text(summary.version_dir.name + "\n")  # no manifest digest then either
    assert Searcher(tmp_path / "index")._encoder_config.separate_prompt is False
