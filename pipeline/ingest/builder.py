"""`htp build`: load -> segment + encode what is not stored yet -> index, resumable, incremental and streaming."""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bm25s
import faiss
import numpy as np
import pyarrow as pa

from htp import EncoderConfig, HTPEncoder
from htp.models import dtype_name, pick_device, pick_dtype
from htp.segment import Segmenter
from indexes.factory import needs_training, resolve_factory
from indexes.faiss_index import build_faiss
from indexes.lexical import Terms, build_bm25_terms
from indexes.ondisk import IVF_DATA, is_ivf, merge_parts, trained_ivf
from indexes.owned import OWNED, mark_owned, remove_owned, written_here
from indexes.store import (
    TMP_PREFIX,
    VERSIONS,
    Manifest,
    first_rows,
    locked_for_writing,
    row_documents,
    write_version,
)
from pipeline.config import Config, IndexConfig, config_hash
from pipeline.errors import PipelineError, PipelineValueError
from pipeline.ingest.calibration import CalibrationSkipped, calibrate, seeded_hash
from pipeline.ingest.context import SHARDS, BuildContext, build_context, field_names, sample_rows
from pipeline.ingest.engines import ENGINES, Engine
from pipeline.ingest.load import LoadResult, load_documents
from pipeline.ingest.shards import (
    Located,
    ShardStore,
    document_key,
)
from pipeline.ingest.versions import package_versions
from pipeline.metadata import metadata_table
from pipeline.query.calibrated import Calibration, describe
from pipeline.records import full_texts
from pipeline.vectors import prepare, streamed_mean

CALIBRATION_TEXTS = "calibration-texts"  # calibration's encoded pseudo-queries, inside the shard folder
SHARD_FOLDER = re.compile(r"[0-9a-f]{16}(-[0-9a-f]{16})?")  # encoder_key; encoder_key-content_key before keyed shards

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did, for the CLI's closing line and for tests."""

    documents: int
    skipped_empty: int
    encoded: int
    reused: int  # vectors stored by an earlier or killed build of the same documents and encoder settings
    dropped: int  # stored documents no longer in the input (deleted, or changed and encoded again)
    truncated: int
    factory: str
    version_dir: Path
    shard_dir: Path
    seconds: float
    calibration: dict | None = None
    encode_seconds: float = 0.0  # of `seconds`: encoding the documents (calibration's encoding not included)


def _stored_vectors(store: ShardStore, located: Located, keys: list[str]) -> np.ndarray:
    """Stored (raw) vectors of the documents with these keys, in this order."""
    return np.concatenate([vectors for _, vectors in store.gather(keys, located)])


def _page_vectors(store: ShardStore, located: Located, keys: list[str]) -> np.ndarray:
    """The first stored row of each document with these keys, in this order: its own vector in an index whose
    pages keep theirs (index.page_vector)."""
    return np.concatenate([vectors[first_rows(ids)] for ids, vectors in store.gather(keys, located)])


def _read_documents(store: ShardStore, located: Located, keys: list[str], center: np.ndarray | None) -> np.ndarray:
    """Prepared vectors of the documents with these keys, in this order."""
    return prepare(_stored_vectors(store, located, keys), center)


def calibrate_index(ctx: BuildContext, center: np.ndarray | None) -> Calibration:
    """Fit the index's calibration on (a sample of at most calibration.max_documents of) its own documents.

    The pseudo-queries and edited documents it encodes are kept beside the shards, keyed by text, so a rebuild
    of a slightly changed corpus (whose sample is nearly the same) encodes only the few new ones."""
    config = ctx.config
    if config.index.window_tokens is not None and not config.index.page_vector:
        raise CalibrationSkipped(
            "a multi-vector index of windows alone has no vector per document, which calibration fits on "
            "(index.page_vector: true keeps one)"
        )
    settings = config.calibration
    rows = _stable_sample(ctx.keys, settings.max_documents, settings.seed)
    subset = ctx.loaded.dataset.select(rows)
    texts = full_texts(subset)
    sampled = [ctx.keys[row] for row in rows]
    raw = (_page_vectors if config.index.page_vector else _stored_vectors)(ctx.store, ctx.located, sampled)
    position = {text: i for i, text in enumerate(texts)}
    cache = ShardStore(ctx.store.folder / CALIBRATION_TEXTS, ctx.store.config_hash)
    cached = cache.locate()
    used: set[str] = set()

    def encode(items: list[str], kind: str) -> np.ndarray:
        item_keys = [document_key(kind, "", item) for item in items]
        used.update(item_keys)
        first = {key: i for i, key in reversed(list(enumerate(item_keys)))}
        fresh = [key for key in first if key not in cached]
        if fresh:
            cache.write(fresh, fresh, ctx.encoder().encode([items[first[key]] for key in fresh], kind=kind))
            cached.update(cache.locate())
        return _stored_vectors(cache, cached, item_keys)

    def same_input(originals: list[str], edited: list[str]) -> list[bool]:
        """Whether the encoder reads each edit as its original. Comparing loads the model, so only edits not stored
        yet are compared; one the encoder cannot see is stored under its edited text with the original's vector, so
        a rebuild tells it from a stored edit that was encoded by that vector alone, with no model."""
        keys = [document_key("document", "", text) for text in edited]
        sources = raw[[position[text] for text in originals]]
        known = [i for i, key in enumerate(keys) if key in cached]
        fresh = [i for i, key in enumerate(keys) if key not in cached]
        verdict: dict[int, bool] = {}
        if known:
            kept = _stored_vectors(cache, cached, [keys[i] for i in known])
            verdict.update((i, bool(np.array_equal(vector, sources[i]))) for i, vector in zip(known, kept))
        if fresh:
            verdict.update(
                zip(fresh, ctx.encoder().same_input([originals[i] for i in fresh], [edited[i] for i in fresh]))
            )
            unseen: dict[str, int] = {}  # one row per key: two identical edits stored twice would read as two rows
            for i in fresh:
                if verdict[i]:
                    unseen.setdefault(keys[i], i)
            if unseen:
                cache.write(list(unseen), list(unseen), sources[list(unseen.values())])
                cached.update(cache.locate())
        used.update(keys[i] for i, same in verdict.items() if same)
        return [verdict[i] for i in range(len(edited))]

    stored = prepare(raw, center)
    calibration = calibrate(
        texts,
        stored,
        center,
        encode,
        Segmenter(config.encoder.spacy_model).sentence_starts,
        settings.pseudo_queries,
        settings.dev_queries,
        settings.seed,
        bm25=config.index.bm25,
        same_input=same_input,
    )
    cache.prune(used, cache.locate())
    return calibration


def _stable_sample(keys: list[str], limit: int, seed: int) -> list[int]:
    """At most `limit` rows, sorted, chosen by a seeded hash of each document's key: a document is in or out of the
    sample on its own, so a slightly changed corpus keeps nearly the same sample."""
    if len(keys) <= limit:
        return list(range(len(keys)))
    ranks = np.array([seeded_hash(seed, key) for key in keys], np.uint64)
    return sorted(np.argsort(ranks, kind="stable")[:limit].tolist())


def dense_index(
    ctx: BuildContext, engine: Engine, dim: int, center: np.ndarray | None, scratch: Path
) -> tuple[str, faiss.Index, Path | None]:
    """The FAISS index over the documents' prepared vectors in input order: factory chosen by size and budget,
    trained on a sample of the documents; an IVF index goes on disk when index.on_disk says so: the engine writes
    its parts under `scratch`, merged here into one lists file (returned too)."""
    settings, count = ctx.config.index, len(ctx.keys)
    budget = settings.memory_budget_mb * 2**20
    factory = resolve_factory(settings.factory, count, dim, budget)
    on_disk = settings.on_disk is True or (
        settings.on_disk == "auto" and count * dim * 4 > budget and is_ivf(factory, dim)
    )
    sample = [ctx.keys[row] for row in sample_rows(count, settings.train_sample, 0)]
    train = _read_documents(ctx.store, ctx.located, sample, center) if needs_training(factory, dim) else None
    if not on_disk:
        return factory, build_faiss(factory, dim, ctx.vectors(center, f"index {factory}"), train), None
    part_rows = max(256, budget // (8 * dim * 4))  # a part's vectors and codes stay well inside the budget
    trained = trained_ivf(factory, dim, train)
    parts = engine.write_ivf_parts(ctx, trained, center, part_rows, scratch)
    return factory, merge_parts(trained, parts, scratch), scratch / IVF_DATA


def lexical_index(loaded: LoadResult) -> tuple[bm25s.BM25, Terms]:
    """BM25 over the same texts the encoder saw (title and body), and its terms (what a change re-scores from)."""
    return build_bm25_terms(full_texts(loaded.dataset))


def manifest_for(
    encoder: EncoderConfig,
    index: faiss.Index,
    factory: str,
    calibration: Calibration | None,
    layout: IndexConfig,
    built_with: dict,
) -> Manifest:
    """The manifest: the encoder's resolved vector settings and their hash, the index's shape, the calibration,
    the window size of a multi-vector index (and whether pages keep their own vector), and the device and dtype
    that encoded."""
    settings = encoder.vector_settings()
    return Manifest(
        dimension=index.d,
        metric="inner_product",
        count=index.ntotal,
        factory=factory,
        config_hash=config_hash(settings),
        encoder=settings,
        package_versions=package_versions(),
        calibration=calibration.settings() if calibration else {},
        window_tokens=layout.window_tokens,
        page_vector=layout.page_vector,
        built_with=built_with,
    )


def index_shards(ctx: BuildContext, engine: Engine) -> tuple[str, Path, Calibration | None]:
    """Stage 4: centre, calibrate, build the dense and lexical indexes over the input's documents, and write the
    version."""
    config, ids = ctx.config, []

    def vectors_noting_ids():
        for row_ids, vectors in ctx.store.gather(ctx.keys, ctx.located):
            ids.extend(row_ids)
            yield vectors

    mean = streamed_mean(vectors_noting_ids())
    if row_documents(ids) != ctx.loaded.dataset["id"]:
        raise PipelineError(
            f"shards in {ctx.store.folder} do not match the input documents; delete that folder and build again"
        )
    center = mean if config.index.center else None
    calibration = None
    if config.index.calibrate:
        try:
            calibration = calibrate_index(ctx, center)
        except CalibrationSkipped as skipped:
            log.info(f"calibrate: skipped: {skipped}; searching with search.fusion / search.dense_weight as configured")
    (ctx.index_dir / VERSIONS).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=ctx.index_dir / VERSIONS))  # a killed build's is cleaned up
    mark_owned(scratch)
    try:
        factory, index, ivf_data = dense_index(ctx, engine, len(mean), center, scratch)
        bm25, terms = lexical_index(ctx.loaded) if config.index.bm25 else (None, None)
        docs = ctx.loaded.dataset.data.table.select(["id", "title", "text"])
        manifest = manifest_for(config.encoder, index, factory, calibration, config.index, ctx.built_with)
        metadata, manifest.metadata = ctx.metadata if ctx.metadata is not None else (None, {})
        version = write_version(
            ctx.index_dir,
            index,
            ids,
            pa.table(docs),
            manifest,
            ivf_data=ivf_data,
            bm25=bm25,
            terms=terms,
            center=center,
            calibration=calibration.arrays() if calibration else None,
            metadata=metadata,
        )
    finally:
        remove_owned(scratch)
    return factory, version, calibration


def build(
    config: Config,
    input_path: Path | None = None,
    index_dir: Path | None = None,
    encoder: HTPEncoder | None = None,
    allow_foreign: bool = False,
) -> BuildSummary:
    """Run every stage under the index folder's lock; a killed build run again resumes from its completed shards.

    `allow_foreign` lets a build write an index into a non-empty folder that is not one (nothing of its is deleted).
    """
    began = time.perf_counter()
    input_path = Path(input_path or config.paths.input)
    index_dir = Path(index_dir or config.paths.index_dir)
    device = pick_device(config.encoder.device)  # a device this machine lacks is reported before any work
    built_with = (
        {"device": str(encoder.device), "dtype": encoder.dtype}
        if encoder is not None
        else {"device": str(device), "dtype": dtype_name(pick_dtype(config.encoder.dtype, device))}
    )
    fields = field_names(config)
    loaded = load_documents(input_path, fields)
    log.info(f"load: {len(loaded.dataset)} documents from {loaded.source}, {loaded.skipped_empty} empty skipped")
    if len(loaded.dataset) == 0:
        raise PipelineValueError(f"{input_path} holds no non-empty documents: nothing to index")
    metadata = None  # typed now, so a field mixing types is refused before any encoding
    if loaded.metadata_fields:
        metadata = metadata_table(loaded.metadata_fields, loaded.dataset["metadata"], loaded.dataset["id"])
        log.info("load: metadata " + ", ".join(f"{name} ({kind})" for name, kind in metadata[1].items()))
    with locked_for_writing(index_dir, allow_foreign) as leftovers:
        if leftovers:
            log.info(f"clean: removed {len(leftovers)} unfinished version folder(s) of killed builds")
        ctx = build_context(config, input_path, index_dir, loaded, encoder, built_with, metadata)
        store, keys = ctx.store, ctx.keys
        engine = ENGINES[config.engine]()
        missing = len(ctx.missing())
        reused = len(keys) - missing
        if missing and encoder is None and config.engine == "local":  # its own line: encoding's share stays true
            loading = time.perf_counter()
            ctx.encoder()
            log.info(f"model: {config.encoder.model} loaded in {time.perf_counter() - loading:.1f} s")
        encoding = time.perf_counter()
        encoded, truncated = engine.encode_missing(ctx)
        encode_seconds = time.perf_counter() - encoding
        log.info(
            f"encode: {encoded} documents encoded ({built_with['dtype']} on {built_with['device']}) in "
            f"{encode_seconds:.1f} s, {reused} reused from earlier builds, {truncated} truncated to "
            f"{config.encoder.max_length} tokens"
        )
        factory, version, calibration = index_shards(ctx, engine)
        if calibration is not None:
            log.info(f"calibrate: {describe(calibration)}")
        dropped = store.prune(set(keys), ctx.located)
        if dropped:
            log.info(f"clean: dropped the stored vectors of {dropped} document(s) no longer in the input")
        others = [p for p in (index_dir / SHARDS).iterdir() if p != store.folder and SHARD_FOLDER.fullmatch(p.name)]
        stale = [p for p in others if written_here(p)]
        for path in stale:
            remove_owned(path)
        if stale:
            log.info(f"clean: removed {len(stale)} shard folder(s) of other encoder settings or an earlier layout")
        for path in sorted(set(others) - set(stale)):
            log.warning(
                f"clean: left {path}: htp-index cannot show it made it (no {OWNED} marker, and it holds files a "
                "shard folder never does); remove it yourself if it is yours to remove"
            )
    seconds = time.perf_counter() - began
    spent = f"; encoding the documents {encode_seconds / seconds:.0%} of it" if encoded else ""
    log.info(f"index: {len(loaded.dataset)} vectors in {factory} at {version} ({seconds:.1f} s in all{spent})")
    return BuildSummary(
        len(loaded.dataset),
        loaded.skipped_empty,
        encoded,
        reused,
        dropped,
        truncated,
        factory,
        version,
        store.folder,
        seconds,
        calibration.settings() if calibration else None,
        encode_seconds,
    )
