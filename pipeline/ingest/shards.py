"""Embeddings on disk as Parquet shards keyed per document, so a rebuild encodes only new or changed documents
and a killed build (local or Ray) resumes from whatever shards it completed.

Each row holds a document id, the document's key (a hash of its id, title and text) and one vector; a
multi-vector document's windows are consecutive rows of one shard with its key. A shard is named by the hash of
the keys it holds and written atomically (temp file, fsync, rename), so any number of writers can add shards to
one folder and a retried task writes the same file again. A key stored twice (a crash between a shard and its
rewrite) is read from the first shard in name order only. Each shard carries a SHA-256 of its rows in its Parquet
metadata, checked whenever its vectors are read, so a shard rewritten by another tool (without page checksums)
or replaced by a copy of another is refused, or written again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexes.durable import TEMP_SUFFIX, write_atomically
from indexes.errors import one_line
from indexes.owned import mark_owned
from indexes.store import row_documents
from pipeline.errors import PipelineValueError

META = "meta.json"
PATTERN = "shard-*.parquet"
FORMAT = 3  # 3: shards carry DIGEST; 2: without it (upgraded on open); 1 (positional shards): builds remove those
DIGEST = b"htp.rows_sha256"
OPEN_SHARDS = 8  # shards kept decoded while vectors are gathered in input order
GATHER_BATCH = 1024  # documents per batch that gather yields
Located = dict[str, tuple[Path, int, int]]  # document key -> (shard, first row, row count): what locate returns


class ShardError(PipelineValueError):
    """The shard folder does not fit this build (other settings, or damaged)."""


def document_key(doc_id: str, title: str, text: str) -> str:
    """What identifies a document's stored vectors: a hash of its id, title and text."""
    return hashlib.sha256(json.dumps([doc_id, title, text]).encode()).hexdigest()[:32]


def document_keys(ids: Sequence[str], titles: Sequence[str], texts: Sequence[str]) -> list[str]:
    """document_key of every row of a batch."""
    return [document_key(i, t, x) for i, t, x in zip(ids, titles, texts)]


class ShardStore:
    """One folder of keyed shards for one encoder setting (its hash is recorded in meta.json)."""

    def __init__(self, folder: Path, config_hash: str) -> None:
        self.folder = Path(folder)
        self.config_hash = config_hash
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True)
            mark_owned(self.folder)
        meta_path = self.folder / META
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except (ValueError, OSError) as err:
                raise ShardError(
                    f"{meta_path} is damaged ({err.__class__.__name__}); delete {self.folder} and build "
                    "again (its vectors are re-encoded)"
                ) from err
            if not isinstance(meta, dict) or not isinstance(meta.get("format", FORMAT), int):
                raise ShardError(
                    f"{meta_path} is not a JSON object of this package's; delete {self.folder} and build again"
                )
            if meta.get("config_hash") != config_hash:
                raise ShardError(
                    f"{self.folder} holds shards of another configuration (hash {meta.get('config_hash')}, "
                    f"this build {config_hash}); delete it or use a new out dir"
                )
            self.dim = meta.get("dim")
            if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1):
                raise ShardError(
                    f"{meta_path} gives the vectors' dimension as {self.dim!r}; it was edited or damaged: delete "
                    f"{self.folder} and build again (its vectors are re-encoded)"
                )
            self.undigested = set(meta.get("undigested", []))
            if meta.get("format", FORMAT) < FORMAT:
                self._upgrade()
        else:
            self.dim, self.undigested = None, set()
            self._write_meta()
        self._table = functools.lru_cache(maxsize=OPEN_SHARDS)(self._read_table)

    def _upgrade(self) -> None:
        """A format-2 folder becomes format 3: the shards it holds now without a digest are listed by name, and
        only those are ever read without one, so a digestless file put in later is refused."""
        self.undigested |= {path.name for path in self.shards() if DIGEST not in (_schema(path).metadata or {})}
        self._write_meta()

    def remove_leftovers(self) -> int:
        """Delete temp files of interrupted writes (call while no writer runs); returns how many."""
        leftovers = list(self.folder.glob(f"*{TEMP_SUFFIX}"))
        for temp in leftovers:
            temp.unlink(missing_ok=True)
        return len(leftovers)

    def shards(self) -> list[Path]:
        """Completed shard files in name order."""
        return sorted(self.folder.glob(PATTERN))

    def locate(self, paths: Sequence[Path] | None = None, wanted: Collection[str] | None = None) -> Located:
        """key -> (shard, first row, row count) for every document stored in `paths` (default: every shard, in
        name order; a key stored twice is found in the first), reading only the key columns; with `wanted`, only
        those keys are listed (a change of 10 documents does not build a map of the 100,000 stored)."""
        located: Located = {}
        wanted_keys = None if wanted is None else pa.array(list(wanted), pa.string())
        for path in self.shards() if paths is None else paths:
            keys = _read_checked(path, ["key"]).column("key").combine_chunks()
            if len(keys) == 0:
                continue
            # a document's rows are consecutive: its runs of one key, found without a Python loop per row
            changes = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
            starts = np.concatenate([[0], np.flatnonzero(changes) + 1])
            counts = np.diff(np.concatenate([starts, [len(keys)]]))
            heads = keys.take(pa.array(starts))
            if wanted_keys is not None:
                keep = pc.is_in(heads, value_set=wanted_keys).to_numpy(zero_copy_only=False)
                heads, starts, counts = heads.filter(pa.array(keep)), starts[keep], counts[keep]
            for key, start, count in zip(heads.to_pylist(), starts.tolist(), counts.tolist()):
                located.setdefault(key, (path, start, count))
        return located

    def write(self, ids: Sequence[str], keys: Sequence[str], vectors: np.ndarray) -> Path:
        """Write one shard atomically, named by its keys; a shard already there holding exactly these rows, intact,
        is kept (one holding anything else is replaced)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or not len(vectors) == len(ids) == len(keys) or len(ids) == 0:
            raise PipelineValueError(
                f"need one vector and one key per id and at least one id, got {len(ids)} ids, "
                f"{len(keys)} keys and vectors of shape {vectors.shape}"
            )
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            self._write_meta()
        if vectors.shape[1] != self.dim:
            raise ShardError(
                f"vectors have {vectors.shape[1]} dimensions but the shards in {self.folder} have {self.dim}"
            )
        broken = [str(ids[int(row)]) for row in np.flatnonzero(~np.isfinite(vectors).all(axis=1))]
        if broken:
            raise ShardError(
                f"the encoder gave NaN or infinite vectors for {len(broken)} document(s) ({', '.join(broken[:5])}); "
                "nothing was stored: try encoder.dtype: float32, or report the texts"
            )
        path = self.folder / f"shard-{hashlib.sha256(''.join(keys).encode()).hexdigest()[:20]}.parquet"
        ids = [str(i) for i in ids]
        if path.exists() and self._holds(path, ids, keys, vectors):
            return path
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "id": pa.array(ids, type=pa.string()),
                "key": pa.array(list(keys), type=pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, self.dim),
            },
            metadata={DIGEST: _rows_digest(ids, keys, vectors).encode()},
        )
        write_atomically(path, lambda f: pq.write_table(table, f, write_page_checksum=True))
        self._table.cache_clear()
        return path

    def _holds(self, path: Path, ids: list[str], keys: Sequence[str], vectors: np.ndarray) -> bool:
        """Whether the shard at `path` is intact and holds these rows (a retried write), not a damaged file or a
        copy of another shard put in its place."""
        try:
            table = self._read_verified(path)
        except ShardError:
            return False
        return (
            table.column("id").to_pylist() == ids
            and table.column("key").to_pylist() == list(keys)
            and np.array_equal(_vectors(table), vectors)
        )

    def gather(
        self, keys: Sequence[str], located: Located, batch: int = GATHER_BATCH
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(row ids, vectors) for the documents with these keys, in this order, `batch` documents at a time; a
        key not stored is a ShardError."""
        for start in range(0, len(keys), batch):
            ids: list[str] = []
            parts: list[np.ndarray] = []
            for key in keys[start : start + batch]:
                if key not in located:
                    raise ShardError(f"{self.folder} holds no vectors for document key {key}: build again")
                path, first, count = located[key]
                shard_ids, vectors = self._table(path)
                ids.extend(shard_ids[first : first + count])
                parts.append(vectors[first : first + count])
            yield ids, np.concatenate(parts)

    def prune(self, live: set[str], located: Located) -> int:
        """Drop stored documents whose keys are not live, and second copies of live ones: a shard left with nothing
        is deleted, one with something left is rewritten with it (Parquet I/O only, no encoding); returns how many
        documents were dropped."""
        dropped: set[str] = set()
        for path in self.shards():
            keys = row_documents(_read_checked(path, ["key"]).column("key").to_pylist())
            kept = [k for k in keys if k in live and located.get(k, (None,))[0] == path]
            dropped.update(k for k in keys if k not in live)
            if len(kept) == len(keys):
                continue
            if kept:
                rows = np.concatenate([np.arange(located[k][1], located[k][1] + located[k][2]) for k in kept])
                table = self._read_verified(path).take(pa.array(rows))
                self.write(table.column("id").to_pylist(), table.column("key").to_pylist(), _vectors(table))
            path.unlink()
        self._table.cache_clear()
        return len(dropped)

    def _read_verified(self, path: Path) -> pa.Table:
        """A whole shard, its rows checked against the digest written with them (the format-2 shards listed as
        undigested have none)."""
        table = _read_checked(path)
        stored = (table.schema.metadata or {}).get(DIGEST)
        if stored is None and path.name in self.undigested:
            return table
        if stored is None or stored.decode() != _rows_digest(
            table.column("id").to_pylist(), table.column("key").to_pylist(), _vectors(table)
        ):
            raise ShardError(
                f"{path} is damaged (its rows do not match the checksum written with them, or it was "
                "rewritten without one); delete it and run the build again to re-encode its documents"
            )
        return table

    def _read_table(self, path: Path) -> tuple[list[str], np.ndarray]:
        table = self._read_verified(path)
        vectors = _vectors(table)
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ShardError(
                f"{path} holds {vectors.shape[1]}-dimensional vectors but {self.folder / META} says {self.dim}: one "
                f"of them was edited; delete {self.folder} and build again (its vectors are re-encoded)"
            )
        if not np.isfinite(vectors).all():  # a centre or a search over NaN answers nothing, silently
            raise ShardError(
                f"{path} holds NaN or infinite vectors: delete it and build again (its documents are re-encoded)"
            )
        return table.column("id").to_pylist(), vectors

    def _write_meta(self) -> None:
        """meta.json, written atomically like the shards."""
        meta = {"dim": self.dim, "config_hash": self.config_hash, "format": FORMAT}
        if self.undigested:
            meta["undigested"] = sorted(self.undigested)
        write_atomically(self.folder / META, lambda f: f.write(json.dumps(meta, indent=2).encode()))


def _rows_digest(ids: Sequence[str], keys: Sequence[str], vectors: np.ndarray) -> str:
    """SHA-256 of a shard's rows: ids, keys and float32 vector bytes."""
    digest = hashlib.sha256(json.dumps([list(ids), list(keys)]).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _vectors(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(-1, column.type.list_size)


def _schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise _damaged(path, err) from err


def _read_checked(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a shard verifying its page checksums (CRC32, written with every shard), so flipped bytes are caught
    before they reach an index; a damaged shard is named with what to do."""
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as err:
        raise _damaged(path, err) from err


def _damaged(path: Path, err: Exception) -> ShardError:
    return ShardError(
        f"{path} is damaged ({one_line(err)}); delete it and run the build again to re-encode its documents"
    )


def read_shards(folder: Path) -> Iterator[tuple[list[str], np.ndarray]]:
    """(row ids, float32 vectors [n, dim]) of every completed shard in name order, for inspection and tests."""
    for path in sorted(Path(folder).glob(PATTERN)):
        table = _read_checked(path, ["id", "embedding"])
        yield table.column("id").to_pylist(), _vectors(table)
