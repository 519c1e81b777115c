"""Index folders on disk: immutable versions, swapped in atomically through a CURRENT pointer; read-only opening.

    INDEX_DIR/CURRENT                 name of the live version
    INDEX_DIR/versions/<name>/        ids.parquet, docs.parquet, manifest.json, and the files of its parts
                                      (indexes.parts: index.faiss, [center.npy], [bm25/], [calibration.npz], ...)

A reader resolves CURRENT once and keeps its version; a rebuild writes a new version, then replaces CURRENT
with one rename, and removes only versions older than the one it replaced.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexes.deleted import rows_of, searchable
from indexes.durable import fsync, write_atomically
from indexes.errors import IndexFolderError, IndexMissingError, IndexValueError, damaged, one_line
from indexes.faiss_index import search_faiss
from indexes.lexical import search_bm25
from indexes.owned import OWNED, mark_owned, remove_owned, written_here
from indexes.parts import PARTS, Shape
from indexes.upgrade import (
    FORMAT,
    made_before_the_marker,
    read_pointer,
    temp_before_the_marker,
    upgrade_manifest,
)

CURRENT = "CURRENT"
VERSIONS = "versions"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
MARKER = ".htp-index"
LOCK = ".lock"
VERSION_NAME = re.compile(r"\d{8}T\d{6}-[A-Za-z0-9_]+")
DOC_COLUMNS = ["id", "title", "text"]
DOCS_ROW_GROUP = 1024  # small row groups, so fetching a page of hits decodes a few thousand documents at most

Hits = list[list[tuple[str, float]]]


_VERIFIED: dict[tuple[str, int, int, int], str] = {}  # files this process hashed: (path, inode, size, mtime) -> sha256


@dataclass
class Manifest:
    """What an index holds and how its vectors were made; a query encoder must match `encoder`."""

    dimension: int
    metric: str
    count: int
    factory: str
    config_hash: str
    encoder: dict
    package_versions: dict
    checksums: dict = field(default_factory=dict)
    created: str = ""
    calibration: dict = field(default_factory=dict)  # what calibration chose (its arrays are the calibration part)
    sizes: dict = field(default_factory=dict)
    window_tokens: int | None = None  # multi-vector: one row per window of at most this many tokens
    page_vector: bool = False  # multi-vector: each document's first row is its own vector, then its windows if any
    built_with: dict = field(default_factory=dict)  # device and dtype of the build's encoder (not part of the key)
    parts: list[str] = field(default_factory=list)  # indexes.parts written, in the order they load
    metadata: dict = field(default_factory=dict)  # metadata field -> type (string, integer, float, boolean, date, list)
    # live changes since the last full build (pipeline.ingest.changes); {} after one
    changes: dict = field(default_factory=dict)
    format: int = FORMAT

    @property
    def bm25(self) -> bool:
        return "bm25" in self.parts

    @property
    def centered(self) -> bool:
        return "center" in self.parts

    @property
    def model(self) -> str:
        return self.encoder["model"]

    @property
    def method(self) -> str:
        return self.encoder["method"]

    def to_json(self) -> str:
        """Pretty, key-sorted JSON for manifest.json."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse manifest.json, read through indexes.upgrade when an older format wrote it, refusing one written
        with other fields."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise IndexValueError(
                f"manifest is not valid JSON ({err}): the version is damaged; rebuild the index"
            ) from err
        if not isinstance(data, dict):
            raise IndexValueError(f"manifest is a JSON {type(data).__name__}, not an object: rebuild the index")
        try:
            return cls(**upgrade_manifest(data))
        except TypeError as err:
            raise IndexValueError(
                f"manifest does not match this version of indexes/ ({err}): rebuild the index"
            ) from err


_HASHERS = ThreadPoolExecutor(2, thread_name_prefix="htp-sha256")  # hashlib releases the GIL on large reads


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _data_files(folder: Path) -> list[Path]:
    """Every file of a version except its manifest."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, OWNED))


def first_rows(ids: Sequence[str]) -> list[int]:
    """The position of each document's first row among rows of document ids (a document's rows are consecutive)."""
    return [i for i, doc in enumerate(ids) if i == 0 or ids[i - 1] != doc]


def row_documents(ids: list[str]) -> list[str]:
    """The documents of a multi-vector index's rows in order (a document's windows are consecutive rows)."""
    return [ids[i] for i in first_rows(ids)]


def _check_inputs(
    index: faiss.Index, ids: list[str], docs: pa.Table, manifest: Manifest, deleted: np.ndarray | None
) -> None:
    """Refuse a version whose parts disagree, before anything is written."""
    documents = row_documents(ids) if manifest.window_tokens is not None else ids
    marked = 0 if deleted is None else len(deleted)
    if not len(ids) + marked == index.ntotal == manifest.count or docs.num_rows != len(documents):
        raise IndexValueError(
            f"index holds {index.ntotal} vectors ({marked} marked deleted), with {len(ids)} ids, {docs.num_rows} "
            f"documents and manifest count {manifest.count}: they must agree"
        )
    if len(set(documents)) != len(documents):
        raise IndexValueError(
            "ids are not unique: give every document its own id (a multi-vector index keeps a "
            "document's windows together)"
        )
    missing = [c for c in DOC_COLUMNS if c not in docs.column_names]
    if missing:
        raise IndexValueError(f"docs lacks column(s) {missing}: it needs {DOC_COLUMNS}")
    if docs.column("id").to_pylist() != documents:
        raise IndexValueError("docs rows are not in the order of ids: row i of docs must be the document ids[i]")
    if index.d != manifest.dimension or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexValueError(
            f"index has dimension {index.d} and metric {index.metric_type}, manifest says dimension "
            f"{manifest.dimension}: build it with build_faiss over vectors of the manifest's dimension"
        )


def write_version(
    index_dir: Path,
    index: faiss.Index,
    ids: list[str],
    docs: pa.Table,
    manifest: Manifest,
    ivf_data: Path | None = None,
    **parts: Any,
) -> Path:
    """Write a complete new version, make it current with one atomic rename, prune older ones; returns its folder.

    `parts` are the optional parts by name (indexes.parts: bm25=, center=, calibration= the arrays a calibrated
    query needs, deleted= the labels of FAISS rows marked deleted, or any registered part), None meaning absent;
    `ivf_data` is the inverted-lists file of an on-disk IVF index (indexes.ondisk), moved into the version."""
    _check_inputs(index, ids, docs, manifest, parts.get("deleted"))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise IndexValueError(f"unknown index part(s) {unknown}: register them in indexes.parts first")
    chosen = {"faiss": (index, ivf_data), **{name: value for name, value in parts.items() if value is not None}}
    index_dir = Path(index_dir)
    versions = index_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=versions))
    mark_owned(tmp)
    created = datetime.now(UTC)
    final = versions / f"{created:%Y%m%dT%H%M%S}-{tmp.name.removeprefix(TMP_PREFIX)}"
    try:
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), tmp / "ids.parquet", write_page_checksum=True)
        pq.write_table(  # uncompressed: hits and live changes read it 5x faster than snappy's, for 2x the bytes
            docs.select(DOC_COLUMNS),
            tmp / "docs.parquet",
            row_group_size=DOCS_ROW_GROUP,
            write_page_checksum=True,
            compression="none",
        )
        for name, value in chosen.items():
            PARTS[name].save(value, tmp)
        files = _data_files(tmp)
        written = replace(
            manifest,
            checksums=dict(zip((str(p.relative_to(tmp)) for p in files), _HASHERS.map(_sha256, files))),
            sizes={str(p.relative_to(tmp)): p.stat().st_size for p in files},
            created=created.isoformat(timespec="seconds"),
            parts=list(chosen),
            format=FORMAT,
        )
        (tmp / MANIFEST).write_text(written.to_json())
        for path in [*files, tmp / MANIFEST, *{p.parent for p in files}]:
            fsync(path)
        os.rename(tmp, final)
        fsync(versions)
    except BaseException:
        remove_owned(tmp)
        raise
    for rel, digest in written.checksums.items():  # hashed just now: this process's next open need not again
        _VERIFIED[_file_key(final / rel)] = digest
    previous = current_version(index_dir)
    _point_current(index_dir, final.name, _sha256(final / MANIFEST))
    for old in versions.iterdir():  # a version half-removed by a killed build is still known as ours, and goes now
        if old.name not in (final.name, previous) and VERSION_NAME.fullmatch(old.name) and written_here(old):
            remove_owned(old)
    return final


def is_index_folder(index_dir: Path) -> bool:
    """True for a folder this package made: it has the marker (or is an index from before the marker)."""
    return (index_dir / MARKER).is_file() or made_before_the_marker(index_dir, CURRENT)


@contextmanager
def locked_for_writing(index_dir: Path, allow_foreign: bool = False) -> Iterator[list[Path]]:
    """Hold an exclusive lock on an index folder for a whole build; yields the leftovers of killed builds it removed.

    A second writer fails at once with a clear message instead of racing the first (whose pruning could remove
    the version the other's CURRENT names). A non-empty folder that is not an index is refused unless
    `allow_foreign`; even then only folders this package can show it made are ever deleted there (indexes.owned).
    """
    index_dir = Path(index_dir)
    if index_dir.exists() and not index_dir.is_dir():
        raise IndexFolderError(f"{index_dir} is a file, not a folder: give --out a folder")
    if index_dir.is_dir() and not is_index_folder(index_dir) and any(index_dir.iterdir()) and not allow_foreign:
        raise IndexFolderError(
            f"{index_dir} is not empty and is not an index folder: choose an empty or new folder, "
            "or pass --force to add an index beside its contents (nothing of theirs is deleted)"
        )
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexFolderError(
                f"another build is writing to {index_dir}; wait for it to finish and run again"
            ) from None
        (index_dir / MARKER).touch()
        leftovers = (
            sorted(
                path
                for path in (index_dir / VERSIONS).glob(f"{TMP_PREFIX}*")
                if written_here(path) or temp_before_the_marker(path)
            )
            if (index_dir / VERSIONS).is_dir()
            else []
        )
        for path in leftovers:
            remove_owned(path)
        yield leftovers
    finally:
        os.close(fd)


def _point_current(index_dir: Path, name: str, manifest_sha256: str) -> None:
    """Replace CURRENT atomically: write a temp file, fsync it, rename it over CURRENT, fsync the folder.

    CURRENT holds the version's name and its manifest's SHA-256, so an edited manifest (another model or prompt
    than the vectors were made with) is refused at open."""
    write_atomically(index_dir / CURRENT, lambda f: f.write(f"{name}\n{manifest_sha256}\n".encode()))


def _current(index_dir: Path) -> tuple[str, str | None] | None:
    """(live version name, its manifest's SHA-256 or None for indexes written before it was recorded), or None when
    index_dir holds no index; a name that is not a version's is refused, so CURRENT cannot point outside the index."""
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        return None
    name, digest = read_pointer(pointer.read_text())
    if not VERSION_NAME.fullmatch(name):
        raise IndexValueError(f"{pointer} names {name[:80]!r}, which is not a version of this index: rebuild the index")
    return name, digest


def current_version(index_dir: Path) -> str | None:
    """The live version's name, or None when index_dir holds no index (a service polls this to hot-swap)."""
    current = _current(Path(index_dir))
    return current[0] if current else None


class OpenIndex:
    """One version of an index, opened read-only: nothing here writes to disk.

    The FAISS index and ids are loaded at open, BM25 arrays are memory-mapped and docs.parquet is kept open, so a
    reader goes on working after a rebuild swaps in a new version and even after its own folder is pruned.
    Opening checks what it reads: the manifest against the SHA-256 in CURRENT, every file's size, the SHA-256 of
    every file but docs (memory-mapped ones too: BM25's arrays, an on-disk IVF index's lists), each part against
    the manifest's count and dimension (indexes.parts), and the Parquet page checksums of docs as each row group
    is read.
    Each search checks that no memory-mapped file was cut or grown in place since.
    """

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        unknown = [name for name in manifest.parts if name not in PARTS]
        if unknown or "faiss" not in manifest.parts:
            raise damaged(path / MANIFEST, f"its parts {manifest.parts} are not ones this version of indexes/ reads")
        parts = [PARTS[name] for name in manifest.parts]
        unlisted = [part.path for part in parts if not any(_under(rel, part.path) for rel in manifest.checksums)]
        if unlisted:
            raise damaged(path / MANIFEST, f"it names {', '.join(unlisted)} but lists no checksum for it")
        # docs.parquet is checked page by page as it is read; the rest is hashed now, files side by side
        list(_HASHERS.map(self._checked, [rel for rel in manifest.checksums if rel != "docs.parquet"]))
        self._mapped = {
            rel: _identity(path / rel)
            for rel in manifest.checksums
            if any(_under(rel, mapped) for part in parts for mapped in part.mapped)
        }
        try:
            ids = pq.read_table(path / "ids.parquet")
        except (OSError, pa.ArrowException) as err:
            raise damaged(path / "ids.parquet", one_line(err)) from err
        self.ids: list[str] = ids.column("id").to_pylist()
        self.doc_ids = row_documents(self.ids) if manifest.window_tokens is not None else self.ids
        self.parts: dict[str, Any] = {
            part.name: part.load(path, Shape(manifest.count, manifest.dimension, len(self.doc_ids))) for part in parts
        }
        self.faiss: faiss.Index = self.parts["faiss"]
        self.deleted: np.ndarray | None = self.parts.get("deleted")  # FAISS labels a live change marked deleted
        marked = 0 if self.deleted is None else len(self.deleted)
        if len(self.ids) + marked != self.faiss.ntotal or len(set(self.doc_ids)) != len(self.doc_ids):
            raise damaged(
                path / "ids.parquet",
                f"{len(self.ids)} ids ({len(set(self.doc_ids))} distinct documents) for {self.faiss.ntotal} vectors "
                f"({marked} marked deleted)",
            )
        self.center: np.ndarray | None = self.parts.get("center")
        self.bm25: Any = self.parts.get("bm25")
        self.calibration_arrays: dict[str, np.ndarray] = self.parts.get("calibration", {})
        self._docs = pq.ParquetFile(path / "docs.parquet", memory_map=True, page_checksum_verification=True)
        if self._docs.metadata.num_rows != len(self.doc_ids):
            raise damaged(
                path / "docs.parquet", f"{self._docs.metadata.num_rows} documents for {len(self.doc_ids)} ids"
            )

    def _check_mapped(self) -> None:
        """Refuse to answer from a memory-mapped file (BM25 arrays, on-disk IVF lists) cut or grown in place since it
        was opened and checked; one replaced or removed is fine, as the mapping keeps the file it opened."""
        for rel, opened in self._mapped.items():
            now = _identity(self.path / rel)
            if now is not None and opened is not None and now[0] == opened[0] and now[1] != opened[1]:
                raise damaged(self.path / rel, f"{now[1]} bytes now, {opened[1]} when it was opened")

    def _checked(self, rel: str) -> Path:
        """A file that is loaded whole, after checking its SHA-256 against the manifest; a file this process already
        verified (same inode, size and modification time) is not hashed again."""
        path = self.path / rel
        expected = self.manifest.checksums.get(rel)
        key = _file_key(path)
        if expected is not None and _VERIFIED.get(key) != expected:
            if _sha256(path) != expected:
                raise damaged(path, "checksum mismatch")
            _VERIFIED[key] = expected
        return path

    @staticmethod
    def _hits(names: list[str], scores: np.ndarray, rows: np.ndarray) -> Hits:
        """(id, score) lists per query, rows of -1 dropped."""
        return [[(names[r], float(s)) for s, r in zip(srow, rrow) if r >= 0] for srow, rrow in zip(scores, rows)]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        ef_search: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> Hits:
        """Dense top-k (id, score) per query vector (already prepared like the indexed vectors), among the documents
        `allowed` (a bool per document) when given. A multi-vector index ranks documents by their best window: rows
        are fetched until k distinct documents are found."""
        self._check_mapped()
        if self.manifest.window_tokens is None:
            return self._hits(self.ids, *self._rows_search(queries, k, nprobe, ef_search, allowed))
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)[self.row_documents]
        out: Hits = []
        for query in queries:
            fetch = 4 * k
            while True:
                rows = self._hits(
                    self.ids,
                    *self._rows_search(query[None, :], min(fetch, len(self.ids)), nprobe, ef_search, allowed),
                )[0]
                best: dict[str, float] = {}
                for doc, score in rows:  # best first, so a document's first row is its best window
                    best.setdefault(doc, score)
                if len(best) >= k or fetch >= len(self.ids):
                    out.append(list(best.items())[:k])
                    break
                fetch *= 4
        return out

    def _rows_search(
        self, queries: np.ndarray, k: int, nprobe: int | None, ef_search: int | None, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """search_faiss over the rows ids numbers (a bool per row in `allowed`): rows marked deleted are left out
        as a filter leaves rows out, and the labels found are mapped back to row positions."""
        if self.deleted is None:
            return search_faiss(self.faiss, queries, k, nprobe, ef_search, allowed)
        mask = searchable(self.deleted, self.faiss.ntotal, allowed)
        scores, labels = search_faiss(self.faiss, queries, k, nprobe, ef_search, mask)
        return scores, rows_of(labels, self.deleted)

    def search_bm25(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> Hits:
        """Lexical top-k (id, score) per query text, among the documents `allowed` when given."""
        if self.bm25 is None:
            raise IndexValueError(f"the index at {self.path} has no BM25 part: rebuild it with index.bm25: true")
        self._check_mapped()
        return self._hits(self.doc_ids, *search_bm25(self.bm25, queries, k, allowed))

    @cached_property
    def row_documents(self) -> np.ndarray:
        """The document (position in doc_ids) of each FAISS row (a multi-vector index has several per document)."""
        starts = np.zeros(len(self.ids), dtype=bool)
        starts[first_rows(self.ids)] = True
        return np.cumsum(starts) - 1

    @property
    def metadata(self) -> pa.Table | None:
        """The documents' metadata columns (row i: document doc_ids[i]), or None when the index keeps none."""
        return self.parts.get("metadata")

    def metadata_of(self, ids: list[str]) -> list[dict]:
        """The metadata fields of these documents, in the order asked (empty dicts when the index keeps none)."""
        table = self.metadata
        if table is None:
            return [{} for _ in ids]
        rows = table.take(pa.array([self._rows[i] for i in ids], pa.int64())).to_pylist()
        return [{name: _plain(value) for name, value in row.items()} for row in rows]

    @cached_property
    def _rows(self) -> dict[str, int]:
        """Row position of each id, built on the first documents() call."""
        return {doc_id: row for row, doc_id in enumerate(self.doc_ids)}

    def documents_table(self) -> pa.Table:
        """Every document's id, title and text, in row order (what a live change carries over)."""
        try:
            return self._docs.read(columns=DOC_COLUMNS)
        except (OSError, pa.ArrowException) as err:
            raise damaged(self.path / "docs.parquet", one_line(err)) from err

    def documents(self, ids: list[str]) -> list[dict]:
        """{id, title, text} of these documents, in the order asked, decoding only the row groups that hold them."""
        if not ids:
            return []
        unknown = [i for i in ids if i not in self._rows]
        if unknown:
            raise IndexValueError(f"ids not in the index at {self.path}: {unknown[:5]}")
        rows = np.array([self._rows[i] for i in ids], dtype=np.int64)
        sizes = np.array([self._docs.metadata.row_group(g).num_rows for g in range(self._docs.num_row_groups)])
        starts = np.cumsum(sizes) - sizes
        groups = np.searchsorted(starts, rows, side="right") - 1
        wanted = np.unique(groups)
        wanted_starts = np.cumsum(sizes[wanted]) - sizes[wanted]
        try:
            table = self._docs.read_row_groups(wanted.tolist(), columns=DOC_COLUMNS)
        except (OSError, pa.ArrowException) as err:
            raise damaged(self.path / "docs.parquet", one_line(err)) from err
        return table.take(wanted_starts[np.searchsorted(wanted, groups)] + rows - starts[groups]).to_pylist()


def _plain(value: Any) -> Any:
    """A metadata value as JSON has it (dates in ISO form)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _file_key(path: Path) -> tuple[str, int, int, int]:
    """What identifies a file's content to the verified-hash cache: its real path, inode, size and mtime."""
    stat = path.stat()
    return str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


def _under(rel: str, part_path: str) -> bool:
    """Whether a version's file `rel` is the part's file or inside its folder."""
    return rel == part_path or rel.startswith(part_path.rstrip("/") + "/")


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a file, or None when it is gone."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size


def open_index(index_dir: Path, verify: bool = False) -> OpenIndex:
    """Open the current version read-only, checking it on the way (see OpenIndex); `verify` also re-hashes every
    file against its manifest checksum, BM25 arrays and docs included (what `htp verify` does)."""
    index_dir = Path(index_dir)
    current = _current(index_dir)
    if current is None:
        raise IndexMissingError(f"no index at {index_dir}: build one with `htp build`")
    name, manifest_sha256 = current
    path = index_dir / VERSIONS / name
    if not (path / MANIFEST).is_file():
        raise IndexMissingError(
            f"{index_dir / CURRENT} names version {name!r} but {path / MANIFEST} is missing: "
            "rebuild the index with `htp build`"
        )
    if manifest_sha256 is not None and _sha256(path / MANIFEST) != manifest_sha256:
        raise damaged(path / MANIFEST, "it changed after the build; its checksum is in CURRENT")
    try:
        manifest = Manifest.from_json((path / MANIFEST).read_text())
    except json.JSONDecodeError as err:
        raise damaged(path / MANIFEST, f"not JSON: {err}") from err
    for rel in manifest.checksums:
        if not (path / rel).is_file():
            raise IndexMissingError(f"{path / rel} is missing from the index: rebuild it with `htp build`")
        if rel in manifest.sizes and (path / rel).stat().st_size != manifest.sizes[rel]:
            raise damaged(path / rel, f"{(path / rel).stat().st_size} bytes, the build wrote {manifest.sizes[rel]}")
    if verify:
        for rel, expected in manifest.checksums.items():
            if _sha256(path / rel) != expected:
                raise damaged(path / rel, "checksum mismatch")
    return OpenIndex(path, manifest)
