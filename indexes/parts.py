"""The parts of an index version beside its ids and documents, behind one small interface: each part saves its value
into a version folder and loads it back, checking it against the version's shape. `write_version` and `OpenIndex`
loop over the parts a manifest lists, so a new part is one class here, or anywhere, and one `register` call (as the
metadata columns and the deletion marks below are)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexes.errors import damaged, one_line
from indexes.lexical import Terms, load_bm25, load_terms, save_bm25, save_terms
from indexes.ondisk import IVF_DATA, read_index

CALIBRATION = "calibration.npz"


@dataclass(frozen=True)
class Shape:
    """What a version's parts must agree with: the manifest's vector count and dimension, and its documents."""

    count: int
    dimension: int
    documents: int


class Part(Protocol):
    """One part of a version: `path` is the file or folder it writes inside the version, `mapped` the files among
    them that are memory-mapped while the index is open (checked at every search)."""

    name: str
    path: str
    mapped: tuple[str, ...]

    def save(self, value: Any, folder: Path) -> None:
        """Write `value` under folder/path."""

    def load(self, folder: Path, shape: Shape) -> Any:
        """Read it back, refusing (IndexValueError) a value that does not fit `shape`."""


class DenseIndex:
    """The FAISS index; the value is (index, lists file or None): an on-disk IVF index's lists are moved in."""

    name: str = "faiss"
    path: str = "index.faiss"
    mapped: tuple[str, ...] = (IVF_DATA,)

    def save(self, value: tuple[faiss.Index, Path | None], folder: Path) -> None:
        index, ivf_data = value
        faiss.write_index(index, str(folder / self.path))
        if ivf_data is not None:
            os.replace(ivf_data, folder / IVF_DATA)

    def load(self, folder: Path, shape: Shape) -> faiss.Index:
        index = read_index(folder / self.path, on_disk=(folder / IVF_DATA).is_file())
        if (index.ntotal, index.d) != (shape.count, shape.dimension):
            raise damaged(
                folder / "manifest.json",
                f"it says {shape.count} vectors of dimension {shape.dimension}, "
                f"index.faiss holds {index.ntotal} of dimension {index.d}",
            )
        return index


class Center:
    """The corpus mean subtracted from every vector, queries too."""

    name: str = "center"
    path: str = "center.npy"
    mapped: tuple[str, ...] = ()

    def save(self, value: np.ndarray, folder: Path) -> None:
        np.save(folder / self.path, np.asarray(value, dtype=np.float32))

    def load(self, folder: Path, shape: Shape) -> np.ndarray:
        center = np.load(folder / self.path)
        if center.shape != (shape.dimension,):
            raise damaged(folder / self.path, f"shape {center.shape}, the index has dimension {shape.dimension}")
        return center


class Lexical:
    """The BM25 index over the documents, its arrays memory-mapped."""

    name: str = "bm25"
    path: str = "bm25"
    mapped: tuple[str, ...] = ("bm25/",)

    def save(self, value: Any, folder: Path) -> None:
        save_bm25(value, folder / self.path)

    def load(self, folder: Path, shape: Shape) -> Any:
        model = load_bm25(folder / self.path)
        if int(model.scores["num_docs"]) != shape.documents:
            raise damaged(
                folder / self.path, f"it holds {int(model.scores['num_docs'])} documents, the index {shape.documents}"
            )
        return model


class LexicalTerms:
    """The BM25 index's term frequencies and document lengths, memory-mapped: what a change re-scores BM25 from
    (indexes.lexical); checked against the BM25 part's entries when a change reads them."""

    name: str = "terms"
    path: str = "terms"
    mapped: tuple[str, ...] = ("terms/",)

    def save(self, value: Terms, folder: Path) -> None:
        save_terms(value, folder / self.path)

    def load(self, folder: Path, shape: Shape) -> Terms:
        terms = load_terms(folder / self.path)
        if len(terms.lengths) != shape.documents:
            raise damaged(folder / self.path, f"terms of {len(terms.lengths)} documents for {shape.documents}")
        return terms


class CalibrationArrays:
    """The arrays a calibrated query needs (query mean, adapter): every axis has the vectors' dimension."""

    name: str = "calibration"
    path: str = CALIBRATION
    mapped: tuple[str, ...] = ()

    def save(self, value: dict[str, np.ndarray], folder: Path) -> None:
        np.savez(folder / self.path, **value)  # type: ignore[arg-type]  # the stub reads **arrays as allow_pickle

    def load(self, folder: Path, shape: Shape) -> dict[str, np.ndarray]:
        with np.load(folder / self.path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        wrong = {name: a.shape for name, a in arrays.items() if set(a.shape) != {shape.dimension}}
        if wrong:
            raise damaged(folder / self.path, f"arrays of shape {wrong}, the index has dimension {shape.dimension}")
        return arrays


class MetadataColumns:
    """The documents' metadata fields, one typed column each, row i for document i (filters and hits read it)."""

    name: str = "metadata"
    path: str = "metadata.parquet"
    mapped: tuple[str, ...] = ()

    def save(self, value: pa.Table, folder: Path) -> None:
        pq.write_table(value, folder / self.path, write_page_checksum=True)

    def load(self, folder: Path, shape: Shape) -> pa.Table:
        try:
            table = pq.read_table(folder / self.path, page_checksum_verification=True)
        except (OSError, pa.ArrowException) as err:
            raise damaged(folder / self.path, one_line(err)) from err
        if table.num_rows != shape.documents:
            raise damaged(folder / self.path, f"{table.num_rows} rows for {shape.documents} documents")
        return table


class DeletedRows:
    """The labels of FAISS rows marked deleted by a live change (indexes.deleted), sorted, each below the count."""

    name: str = "deleted"
    path: str = "deleted.npy"
    mapped: tuple[str, ...] = ()

    def save(self, value: np.ndarray, folder: Path) -> None:
        np.save(folder / self.path, np.asarray(value, dtype=np.int64))

    def load(self, folder: Path, shape: Shape) -> np.ndarray:
        labels = np.load(folder / self.path)
        fits = labels.ndim == 1 and labels.dtype == np.int64 and bool(np.all(np.diff(labels) > 0))
        if not fits or (len(labels) and (labels[0] < 0 or labels[-1] >= shape.count)):
            raise damaged(folder / self.path, f"it is not a sorted list of distinct labels below {shape.count}")
        return labels


PARTS: dict[str, Part] = {}


def register(part: Part) -> Part:
    """Make a part known to write_version (as a keyword argument of its name) and to OpenIndex."""
    PARTS[part.name] = part
    return part


for _part in (DenseIndex(), Center(), Lexical(), LexicalTerms(), CalibrationArrays(), MetadataColumns(), DeletedRows()):
    register(_part)
