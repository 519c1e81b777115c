"""`htp build`: load -> segment + encode -> write shards -> index, resumable and streaming."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bm25s
import faiss
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from htp import EncoderConfig, HTPEncoder
from htp.models import pick_device
from htp.segment import Segmenter
from indexes.factory import needs_training, resolve_factory
from indexes.faiss_index import build_faiss
from indexes.lexical import build_bm25
from indexes.store import Manifest, locked_for_writing, row_documents, write_version
from pipeline.calibration import Calibration, CalibrationSkipped, calibrate, describe
from pipeline.config import Config, IndexConfig, config_hash
from pipeline.errors import PipelineError, PipelineValueError
from pipeline.load import FieldNames, LoadResult, iter_batches, load_documents
from pipeline.records import full_text
from pipeline.shards import ShardWriter, read_shards
from pipeline.vectors import prepare, streamed_mean
from pipeline.versions import package_versions

SHARDS = "shards"
SHARD_FOLDER = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}")  # encoder_key-content_key

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did, for the CLI's closing line and for tests."""

    documents: int
    skipped_empty: int
    encoded: int
    resumed: int
    truncated: int
    factory: str
    version_dir: Path
    shard_dir: Path
    seconds: float
    calibration: dict | None = None


def encoder_key(config: Config) -> str:
    """Hash of what decides the stored vectors: the resolved encoder settings (runtime knobs such as device
    excluded) and, for multi-vector indexes, the window size."""
    settings = config.encoder.vector_settings()
    if config.index.window_tokens is not None:
        settings = {**settings, "window_tokens": config.index.window_tokens}
    return config_hash(settings)


def content_key(dataset) -> str:
    """Hash of every id, title and text in order: shards are reused only for exactly the same documents."""
    digest = hashlib.sha256()
    for batch in iter_batches(dataset, 4096):
        for row in zip(batch["id"], batch["title"], batch["text"]):
            digest.update(json.dumps(row).encode())
    return digest.hexdigest()[:16]


def _field_names(config: Config) -> FieldNames:
    return FieldNames(id_field=config.data.id_field, title_field=config.data.title_field, text_field=config.data.text_field)


def encode_to_shards(loaded: LoadResult, config: Config, shard_dir: Path, encoder: Callable[[], HTPEncoder]) -> tuple[int, int, int]:
    """Stage 2+3: encode documents shard by shard, each shard written atomically; resume after a crash.

    `encoder` gives the (lazily loaded) encoder. Returns (newly encoded, resumed from completed shards, truncated).
    """
    dataset = loaded.dataset
    writer = ShardWriter(shard_dir, shard_size=config.index.shard_size, config_hash=encoder_key(config))
    start = writer.resume_offset(dataset["id"])
    remaining = len(dataset) - start
    truncated = 0
    if remaining:
        model = encoder()
        before = model.stats.truncated
        with tqdm(total=len(dataset), initial=start, desc="encode", unit="doc") as bar:
            for batch in iter_batches(dataset, config.index.shard_size, start):
                texts = [full_text(title, text) for title, text in zip(batch["title"], batch["text"])]
                ids = batch["id"]
                if config.index.window_tokens is not None:
                    windows = model.windows(texts, config.index.window_tokens)
                    ids = [doc for doc, parts in zip(ids, windows) for _ in parts]
                    texts = [part for parts in windows for part in parts]
                writer.write(ids, model.encode(texts, kind="document", show_progress=False))
                bar.update(len(batch["id"]))
        truncated = model.stats.truncated - before
    return remaining, start, truncated


def _sample_rows(count: int, limit: int, seed: int) -> np.ndarray:
    """At most `limit` of `count` rows, uniformly at random, sorted."""
    return np.sort(np.random.default_rng(seed).choice(count, size=min(limit, count), replace=False))


def _read_rows(shard_dir: Path, rows: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Prepared vectors of the given sorted rows, read shard by shard."""
    picked, offset = [], 0
    for _, vectors in read_shards(shard_dir):
        inside = rows[(rows >= offset) & (rows < offset + len(vectors))] - offset
        picked.append(prepare(vectors[inside], center))
        offset += len(vectors)
    return np.concatenate(picked)


def calibrate_index(loaded: LoadResult, config: Config, shard_dir: Path, center: np.ndarray | None,
                    encoder: Callable[[], HTPEncoder]) -> Calibration:
    """Fit the index's calibration on (a sample of at most calibration.max_documents of) its own documents."""
    if config.index.window_tokens is not None:
        raise CalibrationSkipped("a multi-vector index keeps several vectors per document, and calibration fits one "
                                 "per document")
    settings = config.calibration
    rows = _sample_rows(len(loaded.dataset), settings.max_documents, settings.seed)
    subset = loaded.dataset.select(rows.tolist())
    texts = [full_text(title, text) for title, text in zip(subset["title"], subset["text"])]
    model = encoder()

    def encode(items: list[str], kind: str) -> np.ndarray:
        return model.encode(items, kind=kind)

    segmenter = model.segmenter or Segmenter(model.config.spacy_model)
    return calibrate(texts, _read_rows(shard_dir, rows, center), center, encode, segmenter.sentence_starts,
                     settings.pseudo_queries, settings.dev_queries, settings.seed, bm25=config.index.bm25)


def dense_index(shard_dir: Path, count: int, dim: int, center: np.ndarray | None,
                settings: IndexConfig) -> tuple[str, faiss.Index]:
    """The FAISS index over the shards' prepared vectors: factory chosen by size and budget, trained on a sample."""
    factory = resolve_factory(settings.factory, count, dim, settings.memory_budget_mb * 2**20)
    train = (_read_rows(shard_dir, _sample_rows(count, settings.train_sample, 0), center)
             if needs_training(factory, dim) else None)
    batches = (prepare(v, center) for _, v in tqdm(read_shards(shard_dir), desc=f"index {factory}", unit="shard"))
    return factory, build_faiss(factory, dim, batches, train)


def lexical_index(loaded: LoadResult) -> bm25s.BM25:
    """BM25 over the same texts the encoder saw (title and body)."""
    data = loaded.dataset
    return build_bm25([full_text(t, x) for t, x in zip(data["title"], data["text"])])


def manifest_for(encoder: EncoderConfig, index: faiss.Index, factory: str, calibration: Calibration | None,
                 window_tokens: int | None) -> Manifest:
    """The manifest: the encoder's resolved vector settings and their hash, the index's shape, the calibration,
    and the window size of a multi-vector index."""
    settings = encoder.vector_settings()
    return Manifest(dimension=index.d, metric="inner_product", count=index.ntotal, factory=factory,
                    config_hash=config_hash(settings), encoder=settings, package_versions=package_versions(),
                    calibration=calibration.settings() if calibration else {}, window_tokens=window_tokens)


def index_shards(loaded: LoadResult, config: Config, shard_dir: Path, index_dir: Path,
                 encoder: Callable[[], HTPEncoder]) -> tuple[str, Path, Calibration | None]:
    """Stage 4: centre, calibrate, build the dense and lexical indexes, and write the version."""
    ids: list[str] = []

    def vectors_noting_ids():
        for shard_ids, vectors in read_shards(shard_dir):
            ids.extend(shard_ids)
            yield vectors

    mean = streamed_mean(vectors_noting_ids())
    if row_documents(ids) != loaded.dataset["id"]:
        raise PipelineError(f"shards in {shard_dir} do not match the input documents; delete that folder and build again")
    center = mean if config.index.center else None
    calibration = None
    if config.index.calibrate:
        try:
            calibration = calibrate_index(loaded, config, shard_dir, center, encoder)
        except CalibrationSkipped as skipped:
            log.info(f"calibrate: skipped: {skipped}; searching with search.fusion / search.dense_weight as configured")
    factory, index = dense_index(shard_dir, len(ids), len(mean), center, config.index)
    bm25 = lexical_index(loaded) if config.index.bm25 else None
    docs = loaded.dataset.data.table.select(["id", "title", "text"])
    manifest = manifest_for(config.encoder, index, factory, calibration, config.index.window_tokens)
    version = write_version(index_dir, index, ids, pa.table(docs), manifest,
                            bm25=bm25, center=center, calibration=calibration.arrays() if calibration else None)
    return factory, version, calibration


def build(config: Config, input_path: Path | None = None, index_dir: Path | None = None, encoder: HTPEncoder | None = None,
          allow_foreign: bool = False) -> BuildSummary:
    """Run every stage under the index folder's lock; a killed build run again resumes from its completed shards.

    `allow_foreign` lets a build write an index into a non-empty folder that is not one (nothing of its is deleted).
    """
    began = time.perf_counter()
    input_path = Path(input_path or config.paths.input)
    index_dir = Path(index_dir or config.paths.index_dir)
    pick_device(config.encoder.device)  # a device this machine lacks is reported before any work
    loaded = load_documents(input_path, _field_names(config))
    log.info(f"load: {len(loaded.dataset)} documents from {loaded.source}, {loaded.skipped_empty} empty skipped")
    if len(loaded.dataset) == 0:
        raise PipelineValueError(f"{input_path} holds no non-empty documents: nothing to index")
    with locked_for_writing(index_dir, allow_foreign) as leftovers:
        if leftovers:
            log.info(f"clean: removed {len(leftovers)} unfinished version folder(s) of killed builds")
        shard_dir = index_dir / SHARDS / f"{encoder_key(config)}-{content_key(loaded.dataset)}"

        @functools.cache
        def loaded_encoder() -> HTPEncoder:
            return encoder or HTPEncoder(config.encoder)

        encoded, resumed, truncated = encode_to_shards(loaded, config, shard_dir, loaded_encoder)
        log.info(f"encode: {encoded} documents encoded, {resumed} resumed from earlier shards, {truncated} truncated to "
              f"{config.encoder.max_length} tokens")
        factory, version, calibration = index_shards(loaded, config, shard_dir, index_dir, loaded_encoder)
        if calibration is not None:
            log.info(f"calibrate: {describe(calibration)}")
        stale = [p for p in (index_dir / SHARDS).iterdir() if p != shard_dir and SHARD_FOLDER.fullmatch(p.name)]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        if stale:
            log.info(f"clean: removed {len(stale)} shard folder(s) of earlier inputs or settings")
    seconds = time.perf_counter() - began
    log.info(f"index: {len(loaded.dataset)} vectors in {factory} at {version} ({seconds:.1f} s in all)")
    return BuildSummary(len(loaded.dataset), loaded.skipped_empty, encoded, resumed, truncated, factory, version,
                        shard_dir, seconds, calibration.settings() if calibration else None)
