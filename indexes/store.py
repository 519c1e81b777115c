"""Index folders on disk: immutable versions, swapped in atomically through a CURRENT pointer; read-only opening.

    INDEX_DIR/CURRENT                 name of the live version
    INDEX_DIR/versions/<name>/        index.faiss, ids.parquet, docs.parquet, manifest.json, [center.npy], [bm25/]

A reader resolves CURRENT once and keeps its version; a rebuild writes a new version, then replaces CURRENT
with one rename, and removes only versions older than the one it replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexes.faiss_index import search_faiss
from indexes.lexical import load_bm25, save_bm25, search_bm25

CURRENT = "CURRENT"
VERSIONS = "versions"
MANIFEST = "manifest.json"


@dataclass
class Manifest:
    """What an index holds and how its vectors were made; a query encoder must match `encoder`."""

    model: str
    method: str
    exit_layer: int
    window: list[int]
    dimension: int
    metric: str
    count: int
    factory: str
    config_hash: str
    encoder: dict
    package_versions: dict
    checksums: dict = field(default_factory=dict)
    created: str = ""
    bm25: bool = False
    centered: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        return cls(**json.loads(text))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync_tree(folder: Path) -> None:
    for path in [*_files(folder), folder / MANIFEST]:
        with path.open("rb") as f:
            os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_version(index_dir: Path, index: faiss.Index, ids: list[str], docs: pa.Table, manifest: Manifest,
                  bm25: object | None = None, center: np.ndarray | None = None) -> Path:
    """Write a complete new version, then make it current atomically; returns its folder."""
    if not len(ids) == index.ntotal == docs.num_rows:
        raise ValueError(f"index holds {index.ntotal} vectors, {len(ids)} ids and {docs.num_rows} documents: they must agree")
    if len(set(ids)) != len(ids):
        raise ValueError("ids are not unique")
    versions = Path(index_dir) / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=versions))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), tmp / "ids.parquet")
        pq.write_table(docs, tmp / "docs.parquet")
        if center is not None:
            np.save(tmp / "center.npy", np.asarray(center, dtype=np.float32))
        if bm25 is not None:
            save_bm25(bm25, tmp / "bm25")
        manifest.checksums = {str(p.relative_to(tmp)): _sha256(p) for p in _files(tmp)}
        manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest.bm25, manifest.centered = bm25 is not None, center is not None
        (tmp / MANIFEST).write_text(manifest.to_json())
        _fsync_tree(tmp)
        name = f"v{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}-{tmp.name[-6:]}"
        final = versions / name
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    previous = _current_name(Path(index_dir))
    pointer = Path(index_dir) / f".{CURRENT}.tmp"
    with pointer.open("w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, Path(index_dir) / CURRENT)
    for old in versions.iterdir():
        if old.name not in (name, previous) and not old.name.startswith(".tmp-"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _current_name(index_dir: Path) -> str | None:
    pointer = index_dir / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else None


class OpenIndex:
    """One version of an index, opened read-only: nothing here writes to disk."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.faiss = faiss.read_index(str(path / "index.faiss"))
        self.ids: list[str] = pq.read_table(path / "ids.parquet").column("id").to_pylist()
        self.center = np.load(path / "center.npy") if (path / "center.npy").is_file() else None
        self.bm25 = load_bm25(path / "bm25") if (path / "bm25").is_dir() else None

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[tuple[str, float]]]:
        return [[(self.ids[r], float(s)) for s, r in zip(srow, rrow) if r >= 0] for srow, rrow in zip(scores, rows)]

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None, ef_search: int | None = None) -> list[list[tuple[str, float]]]:
        """Dense top-k (id, score) per query vector (already prepared like the indexed vectors)."""
        return self._hits(*search_faiss(self.faiss, queries, k, nprobe, ef_search))

    def search_bm25(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Lexical top-k (id, score) per query text."""
        if self.bm25 is None:
            raise ValueError(f"the index at {self.path} has no BM25 part: build it with index.bm25: true")
        return self._hits(*search_bm25(self.bm25, queries, k))

    def documents(self, ids: list[str]) -> list[dict]:
        """id, title and text of these documents, in the order asked."""
        table = pq.read_table(self.path / "docs.parquet", filters=pc.field("id").isin(ids))
        found = {row["id"]: row for row in table.to_pylist()}
        return [found[i] for i in ids if i in found]


def open_index(index_dir: Path, verify: bool = False) -> OpenIndex:
    """Open the current version read-only; `verify` re-checks every file's checksum first."""
    index_dir = Path(index_dir)
    name = _current_name(index_dir)
    if name is None:
        raise FileNotFoundError(f"no index at {index_dir}: build one with `htp build --out {index_dir}`")
    path = index_dir / VERSIONS / name
    manifest = Manifest.from_json((path / MANIFEST).read_text())
    if verify:
        for rel, expected in manifest.checksums.items():
            if _sha256(path / rel) != expected:
                raise ValueError(f"{path / rel} is damaged (checksum mismatch): rebuild the index")
    return OpenIndex(path, manifest)
