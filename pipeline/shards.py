"""Embeddings on disk as Parquet shards, each written atomically, so a killed build resumes where it stopped.

Shard i holds the documents [i * shard_size, (i + 1) * shard_size) of the input order; only the last may be short.
A resumed build therefore starts at the number of documents in the completed shards, after checking that their
ids are the input's ids at those positions. A multi-vector build stores one row per window of a document, all
with the document's id, consecutively.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexes.durable import TEMP_SUFFIX, write_atomically
from indexes.store import row_documents
from pipeline.errors import PipelineValueError

META = "meta.json"
PATTERN = "shard-*.parquet"
DOCUMENTS_KEY = b"htp:documents"  # a shard's document count in its Parquet footer (rows differ when multi-vector)


class ShardError(PipelineValueError):
    """The shard folder does not fit this build (other settings, other input, or damaged)."""


def shard_name(index: int) -> str:
    """File name of shard `index`."""
    return f"shard-{index:05d}.parquet"


class ShardWriter:
    """Writes numbered shards into one folder, recording dim, shard_size and the caller's config hash in meta.json."""

    def __init__(self, folder: Path, *, shard_size: int, config_hash: str, dim: int | None = None) -> None:
        if shard_size < 1:
            raise PipelineValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder = Path(folder)
        self.shard_size = shard_size
        self.config_hash = config_hash
        self.dim = dim
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / META
        if meta_path.exists():
            self._check_meta(json.loads(meta_path.read_text()))
        else:
            self._write_meta()
        shards = self.completed()
        self._shards = len(shards)
        self._count = sum(_documents_in(path) for path in shards)

    def completed(self) -> list[Path]:
        """Completed shard files in order; leftovers of interrupted writes are deleted."""
        for temp in self.folder.glob(f"*{TEMP_SUFFIX}"):
            temp.unlink()
        return _completed(self.folder)

    def resume_offset(self, ids: Sequence[str]) -> int:
        """How many input documents the completed shards already hold, after checking they match the input order."""
        offset = 0
        shards = self.completed()
        for number, path in enumerate(shards):
            stored = row_documents(_read_checked(path, ["id"]).column("id").to_pylist())
            short = len(stored) != self.shard_size and number != len(shards) - 1
            if short or list(ids[offset:offset + len(stored)]) != stored:
                raise ShardError(
                    f"input changed since the interrupted build: {path} does not hold the input's documents "
                    f"{offset}..{offset + len(stored) - 1}; delete {self.folder} or use a new out dir"
                )
            offset += len(stored)
        return offset

    def write(self, ids: Sequence[str], vectors: np.ndarray) -> Path:
        """Write the next shard atomically (temp file, fsync, rename); returns its path."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(ids) == 0:
            raise PipelineValueError(f"need one vector per id and at least one id, got {len(ids)} ids and vectors of shape "
                             f"{vectors.shape}")
        documents = len(row_documents(ids))
        if documents > self.shard_size:
            raise PipelineValueError(f"a shard holds at most {self.shard_size} documents, got {documents}")
        if self._count != self._shards * self.shard_size:
            raise ShardError(f"the last shard in {self.folder} is short, so the input ended there; nothing can follow it")
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            self._write_meta()
        if vectors.shape[1] != self.dim:
            raise ShardError(f"vectors have {vectors.shape[1]} dimensions but the shards in {self.folder} have {self.dim}")
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table({"id": pa.array([str(i) for i in ids], type=pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, self.dim)},
                         metadata={DOCUMENTS_KEY: str(documents)})
        path = self.folder / shard_name(self._shards)
        write_atomically(path, lambda f: pq.write_table(table, f, write_page_checksum=True))
        self._shards += 1
        self._count += documents
        return path

    def _check_meta(self, meta: dict) -> None:
        """Refuse a folder written with another config hash, shard size or dimension."""
        if meta.get("config_hash") != self.config_hash:
            raise ShardError(f"{self.folder} holds shards of another configuration (hash {meta.get('config_hash')}, "
                             f"this build {self.config_hash}); delete it or use a new out dir")
        if meta.get("shard_size") != self.shard_size:
            raise ShardError(f"{self.folder} was written with shard_size {meta.get('shard_size')}, this build uses "
                             f"{self.shard_size}; use the same shard_size to resume, or delete the folder")
        stored_dim = meta.get("dim")
        if stored_dim is not None and self.dim is not None and stored_dim != self.dim:
            raise ShardError(f"{self.folder} holds {stored_dim}-dimensional vectors, this build makes {self.dim}")
        self.dim = self.dim if stored_dim is None else stored_dim

    def _write_meta(self) -> None:
        """meta.json, written atomically like the shards."""
        meta = {"dim": self.dim, "shard_size": self.shard_size, "config_hash": self.config_hash}
        write_atomically(self.folder / META, lambda f: f.write(json.dumps(meta, indent=2).encode()))


def _documents_in(path: Path) -> int:
    """How many documents a shard holds, from its footer (no data read): recorded at write, else (shards written
    before multi-vector indexes, one row per document) its row count."""
    meta = pq.read_metadata(path)
    return int((meta.metadata or {}).get(DOCUMENTS_KEY, meta.num_rows))


def read_shards(folder: Path) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 vectors [n, dim]) per completed shard, in order; temp files of a running writer are skipped."""
    for path in _completed(Path(folder)):
        table = _read_checked(path)
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        yield table.column("id").to_pylist(), column.flatten().to_numpy().reshape(-1, dim)


def _read_checked(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a shard verifying its page checksums (CRC32, written with every shard), so flipped bytes are caught
    before they reach an index; a damaged shard is named with what to do."""
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as err:
        raise ShardError(f"{path} is damaged ({' '.join(str(err).split())[:200]}); delete it and run the build again "
                         "to re-encode its documents") from err


def _completed(folder: Path) -> list[Path]:
    """Shard files in order, refusing a gap in the numbering (a shard deleted by hand)."""
    shards = sorted(folder.glob(PATTERN))
    for number, path in enumerate(shards):
        if path.name != shard_name(number):
            raise ShardError(f"{folder} lacks {shard_name(number)} but has {path.name}; delete the folder and build again")
    return shards
