"""`htp add` and `htp delete`: change a built index without a rebuild. A change encodes only the records it brings
(vectors stored by earlier builds are reused), updates the FAISS index in place where the index type allows it
(indexes.live), re-scores BM25 from the stored terms, and writes the result as a new version under the build
lock, so readers keep theirs and a killed change leaves the old version live (a rerun reuses what it encoded).

The centre and the calibration stay those of the last full build: calibration is marked stale once changes
touched more than calibration.stale_share of the documents, and `htp build` fits both again."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import bm25s
import faiss
import numpy as np
import pyarrow as pa

from htp import EncoderConfig
from htp.config import OPTIONAL_KEYS
from indexes import live
from indexes.deleted import marked
from indexes.errors import IndexMissingError
from indexes.factory import needs_training
from indexes.faiss_index import build_faiss
from indexes.lexical import Terms, build_bm25_terms, changed_bm25
from indexes.ondisk import IVF_DATA
from indexes.store import (
    DOC_COLUMNS,
    OpenIndex,
    current_version,
    is_index_folder,
    locked_for_writing,
    open_index,
    write_version,
)
from pipeline.config import Config
from pipeline.errors import PipelineValueError
from pipeline.ingest.context import build_context, field_names, sample_rows, shard_store
from pipeline.ingest.engines import LocalEngine
from pipeline.ingest.load import LoadResult, load_documents
from pipeline.ingest.shards import ShardError, document_keys
from pipeline.metadata import ARROW_TYPES, MetadataError, metadata_table
from pipeline.query.searcher import check_encoder
from pipeline.records import full_text, full_texts
from pipeline.vectors import prepare

if TYPE_CHECKING:
    from htp import HTPEncoder

log = logging.getLogger(__name__)

# An HNSW index whose rows marked deleted would pass this share of its rows is rebuilt from the stored vectors
# instead: a graph walk then mostly visits rows it must skip.
COMPACT_SHARE = 0.5


@dataclass
class ChangeSummary:
    """What a change did, for the CLI's closing line, the service's answer and tests."""

    added: int  # records whose id was new
    replaced: int  # records whose id was there (their old version is gone)
    deleted: int
    skipped_empty: int  # incoming records with an empty text, left out as a build leaves them out
    encoded: int  # records whose vectors were not stored yet
    documents: int  # in the new version
    dense: str  # "updated in place" (HNSW: ", N rows marked deleted"), or "rebuilt" from the stored vectors
    calibration_stale: bool
    version_dir: Path
    seconds: float


@dataclass
class DenseChange:
    """The FAISS index a change leaves, how it was made (ChangeSummary.dense) and its rows marked deleted."""

    index: faiss.Index
    how: str
    deleted: np.ndarray | None


class ChangeError(PipelineValueError):
    """A change the index cannot take (unknown ids, an index type that cannot change, metadata of another type)."""


def add(
    index_dir: Path,
    input_path: Path,
    config: Config | None = None,
    encoder: HTPEncoder | None = None,
    cache_dir: Path | None = None,
    opened: OpenIndex | None = None,
) -> ChangeSummary:
    """Add the records of `input_path` (any input `htp build` reads) to the index; a record whose id is in the
    index replaces that document. `cache_dir` holds the datasets cache of the input (default: beside it);
    `opened` is the index as a reader already holds it (see `change`)."""
    return change(index_dir, input_path, [], config, encoder, cache_dir, opened)


def delete(
    index_dir: Path, ids: list[str], config: Config | None = None, opened: OpenIndex | None = None
) -> ChangeSummary:
    """Delete these documents from the index; an id it does not hold is an error and nothing changes."""
    if not ids:
        raise ChangeError("give at least one document id to delete")
    return change(index_dir, None, list(ids), config, opened=opened)


def change(
    index_dir: Path,
    input_path: Path | None,
    deletes: list[str],
    config: Config | None = None,
    encoder: HTPEncoder | None = None,
    cache_dir: Path | None = None,
    opened: OpenIndex | None = None,
) -> ChangeSummary:
    """Add (or replace) the records of `input_path` and delete the documents `deletes`, as one new version.
    `opened` (a service's open index) spares reading the index again when it is still the version CURRENT
    names; it is left as it was, so its readers go on searching it."""
    began = time.perf_counter()
    index_dir, deletes = Path(index_dir), list(dict.fromkeys(deletes))
    if not is_index_folder(index_dir):  # before the lock, which would make the folder
        raise IndexMissingError(f"no index at {index_dir}: build one with `htp build`")
    with locked_for_writing(index_dir):
        shared = opened is not None and opened.path.name == current_version(index_dir)
        old = opened if shared and opened is not None else open_index(index_dir)
        config = _index_config(old, config)
        fields = replace(field_names(config), metadata=tuple(old.manifest.metadata), metadata_optional=True)
        loaded = load_documents(Path(input_path), fields, cache_dir) if input_path is not None else None
        if loaded is not None and len(loaded.dataset) == 0:
            raise ChangeError(f"{input_path} holds no record with a non-empty text: nothing to add")
        new_ids = loaded.dataset["id"] if loaded is not None else []
        unknown = sorted(set(deletes) - set(old.doc_ids))
        if unknown:
            raise ChangeError(f"no document(s) {', '.join(map(repr, unknown[:5]))} in the index at {index_dir}")
        both = sorted(set(deletes) & set(new_ids))
        if both:
            raise ChangeError(f"a change cannot both add and delete the same id ({both[0]!r})")
        gone = set(deletes) | set(new_ids)
        kept_docs = np.array([doc not in gone for doc in old.doc_ids], dtype=bool)
        if not kept_docs.any() and not new_ids:
            raise ChangeError("this change would leave the index with no documents: delete the index folder instead")
        metadata = _metadata(old, kept_docs, loaded)  # its type checks come before any encoding
        kept_rows = kept_docs[old.row_documents]
        encoded, vectors, row_ids = _new_vectors(index_dir, config, loaded, old, encoder)
        docs = _documents(old, kept_docs, loaded)
        dense = _dense(old, config, kept_rows, vectors, docs, shared)
        bm25, terms = _lexical(old, kept_docs, loaded, docs)
        changes = _changes(old, len(deletes) + len(new_ids), dense.deleted)
        share = changes["since_build"] / max(changes["documents_at_build"], 1)
        stale = bool(old.manifest.calibration) and share > config.calibration.stale_share
        ids = [old.ids[row] for row in np.flatnonzero(kept_rows)] + row_ids
        manifest = replace(
            old.manifest,
            count=dense.index.ntotal,
            calibration={**old.manifest.calibration, "stale": True} if stale else old.manifest.calibration,
            changes=changes,
            checksums={},
            sizes={},
        )
        version = write_version(
            index_dir,
            dense.index,
            ids,
            docs,
            manifest,
            bm25=bm25,
            terms=terms,
            center=old.center,
            calibration=old.calibration_arrays or None,
            metadata=metadata,
            deleted=dense.deleted,
        )
    replaced = len(set(new_ids) & set(old.doc_ids))
    summary = ChangeSummary(
        len(new_ids) - replaced,
        replaced,
        len(deletes),
        loaded.skipped_empty if loaded is not None else 0,
        encoded,
        docs.num_rows,
        dense.how,
        stale,
        version,
        time.perf_counter() - began,
    )
    log.info(
        f"change: {summary.added} added, {summary.replaced} replaced, {summary.deleted} deleted "
        f"({summary.encoded} encoded, {summary.skipped_empty} empty skipped); dense index {summary.dense}; "
        f"{summary.documents} documents at {version}"
        + ("; calibration is stale: run htp build to fit it again" if stale else "")
    )
    return summary


def _index_config(index: OpenIndex, config: Config | None) -> Config:
    """The configuration a change runs with: the user's (checked against the index's encoder) or the defaults,
    with the index's own encoder settings and window layout, so new vectors match the stored ones."""
    if config is not None:
        check_encoder(config, index)
    config = config or Config()
    settings = EncoderConfig.from_dict({**OPTIONAL_KEYS, **index.manifest.encoder, **config.encoder.runtime()})
    return replace(
        config,
        encoder=settings,
        index=replace(
            config.index,
            window_tokens=index.manifest.window_tokens,
            page_vector=index.manifest.page_vector,
            factory=index.manifest.factory,
        ),
    )


def _new_vectors(
    index_dir: Path, config: Config, loaded: LoadResult | None, old: OpenIndex, encoder: HTPEncoder | None
) -> tuple[int, np.ndarray, list[str]]:
    """(how many were encoded, prepared vectors, row ids) of the incoming records, encoding only those whose
    vectors the shard store does not hold."""
    if loaded is None:
        return 0, np.empty((0, old.manifest.dimension), np.float32), []
    ctx = build_context(config, Path("."), index_dir, loaded, encoder, {})
    encoded, _ = LocalEngine().encode_missing(ctx)
    row_ids, parts = [], []
    for ids, vectors in ctx.store.gather(ctx.keys, ctx.located):
        row_ids.extend(ids)
        parts.append(prepare(vectors, old.center))
    return encoded, np.concatenate(parts), row_ids


def _dense(
    old: OpenIndex, config: Config, kept_rows: np.ndarray, vectors: np.ndarray, docs: pa.Table, shared: bool
) -> DenseChange:
    """The FAISS index after the change, how it was made, and the labels of its rows marked deleted: changed in
    place when its type allows (in a copy when other readers hold `old`, `shared`; HNSW: removed rows marked
    deleted, left out of every search until the next full build, or until they would pass COMPACT_SHARE of its
    rows), else rebuilt from the stored vectors of every document after the change (`docs`; no encoding)."""
    removed = np.flatnonzero(~kept_rows)
    if (old.path / IVF_DATA).is_file():
        raise ChangeError(
            "an on-disk IVF index cannot be changed in place: run htp build over the changed records "
            "(it encodes only the new ones)"
        )
    index = old.faiss
    deleted = marked(old.deleted, removed, index.ntotal) if len(removed) and live.marks_deleted(index) else None
    if deleted is not None and len(deleted) <= COMPACT_SHARE * (index.ntotal + len(vectors)):
        index = faiss.clone_index(index) if shared else index
        live.change(index, np.empty(0, np.int64), vectors)
        return DenseChange(index, f"updated in place, {len(deleted)} rows marked deleted", deleted)
    if deleted is None and live.can_change(index, removes=len(removed) > 0):
        index = faiss.clone_index(index) if shared else index
        live.change(index, removed, vectors)
        return DenseChange(index, "updated in place", old.deleted)
    store = shard_store(config, old.path.parent.parent)
    keys = document_keys(*(docs.column(name).to_pylist() for name in DOC_COLUMNS))
    try:
        everything = np.concatenate([prepare(batch, old.center) for _, batch in store.gather(keys, store.locate())])
    except ShardError as err:
        raise ChangeError(f"the stored vectors this rebuild needs are missing ({err}): run htp build") from err
    factory, dim = old.manifest.factory, old.manifest.dimension
    train = everything[sample_rows(len(everything), config.index.train_sample, 0)]
    rebuilt = build_faiss(factory, dim, [everything], train if needs_training(factory, dim) else None)
    return DenseChange(rebuilt, "rebuilt", None)


def _documents(old: OpenIndex, kept: np.ndarray, loaded: LoadResult | None) -> pa.Table:
    """The documents' id, title and text after the change: those kept, in order, then the incoming ones."""
    table = _kept_rows(old.documents_table(), kept)
    if loaded is None:
        return table
    return pa.concat_tables([table, loaded.dataset.data.table.select(list(DOC_COLUMNS)).cast(table.schema)])


def _kept_rows(table: pa.Table, kept: np.ndarray) -> pa.Table:
    """The rows `kept` (a bool per row) as slices of the runs between removed rows: no copy of what stays."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], kept, [False]]).astype(np.int8)))
    runs = [table.slice(start, stop - start) for start, stop in zip(edges[::2], edges[1::2])]
    return pa.concat_tables(runs) if runs else table.slice(0, 0)


def _lexical(
    old: OpenIndex, kept: np.ndarray, loaded: LoadResult | None, docs: pa.Table
) -> tuple[bm25s.BM25 | None, Terms | None]:
    """BM25 after the change, re-scored from the stored terms (only incoming texts are tokenised); an index
    from before terms were stored is tokenised whole once."""
    if old.bm25 is None:
        return None, None
    terms = old.parts.get("terms")
    if terms is None:
        titles, texts = docs.column("title").to_pylist(), docs.column("text").to_pylist()
        return build_bm25_terms([full_text(title, text) for title, text in zip(titles, texts)])
    return changed_bm25(old.bm25, terms, kept, [] if loaded is None else full_texts(loaded.dataset))


def _metadata(old: OpenIndex, kept: np.ndarray, loaded: LoadResult | None) -> pa.Table | None:
    """The metadata columns after the change; incoming values must have the index's types (integers are taken
    where a field is float), a field the index does not keep is left out."""
    table, types = old.metadata, old.manifest.metadata
    if table is None:
        return None
    table = _kept_rows(table, kept)
    if loaded is None or not len(loaded.dataset):
        return table
    rows = loaded.dataset["metadata"] if "metadata" in loaded.dataset.column_names else ["{}"] * len(loaded.dataset)
    incoming, found = metadata_table(list(types), rows, loaded.dataset["id"])
    for name, kind in types.items():
        seen = found[name]
        fits = seen == kind or (kind == "float" and seen == "integer") or incoming.column(name).null_count == len(rows)
        if not fits and kind == "integer" and seen == "float":
            values = [v for v in incoming.column(name).to_pylist() if v is not None]
            past = next((v for v in values if abs(v) >= 2**63), None)
            if past is not None:  # a JSON reader takes an integer past 64 bits for a float
                raise MetadataError(
                    f"metadata field {name!r} holds 64-bit integers in the index, and a record added gives it "
                    f"{past:.17g}, an integer too large for that (read as a float); keep it within 64 bits, or "
                    "store such values as strings"
                )
        if not fits:
            raise MetadataError(
                f"metadata field {name!r} holds {kind} values in the index but {seen} values in the records added; "
                "give it the index's type, or rebuild with htp build"
            )
    # a record without a field, or with null, holds null there, as at build; a column of nulls alone was typed
    # string, which Arrow cannot cast to a list, so it is made in the index's type
    incoming = pa.table(
        {
            name: pa.nulls(len(rows), ARROW_TYPES[types[name]])
            if incoming.column(name).null_count == len(rows)
            else incoming.column(name).cast(ARROW_TYPES[types[name]])
            for name in table.column_names
        }
    )
    return pa.concat_tables([table, incoming.cast(table.schema)])  # Parquet may name a list's item differently


def _changes(index: OpenIndex, touched: int, deleted: np.ndarray | None) -> dict:
    """The manifest's running count of documents added, replaced or deleted since the last full build, and of the
    FAISS rows marked deleted (HNSW) that the next full build compacts away."""
    before = index.manifest.changes or {"since_build": 0, "documents_at_build": len(index.doc_ids)}
    counts = {"since_build": before["since_build"] + touched, "documents_at_build": before["documents_at_build"]}
    return counts if deleted is None else {**counts, "rows_marked_deleted": len(deleted)}
