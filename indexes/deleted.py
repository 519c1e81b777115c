"""Rows of a FAISS index marked deleted: an index type that cannot remove vectors (HNSW: FAISS's graph has no
delete) keeps them, and the version lists their labels. Searches leave them out inside FAISS (the same selector as
a filter) and map the labels of the rows left back to row positions, the ones ids.parquet holds; a full build
writes the index without them (compaction). Plain functions over a sorted int64 array of labels."""

from __future__ import annotations

import numpy as np

from indexes.errors import IndexValueError


def marked(deleted: np.ndarray | None, removed_rows: np.ndarray, total: int) -> np.ndarray:
    """The labels marked deleted after also removing these row positions (of the rows left, as ids numbers them)
    from an index that holds `total` vectors."""
    before = _labels(deleted)
    live = np.delete(np.arange(total, dtype=np.int64), before)
    return np.union1d(before, live[np.asarray(removed_rows, dtype=np.int64)])


def searchable(deleted: np.ndarray, total: int, allowed_rows: np.ndarray | None) -> np.ndarray:
    """A bool per FAISS label: not deleted, and allowed when `allowed_rows` (a bool per row position) is given."""
    mask = np.ones(total, dtype=bool)
    mask[deleted] = False
    if allowed_rows is not None:
        allowed_rows = np.asarray(allowed_rows, dtype=bool)
        if allowed_rows.shape != (total - len(deleted),):
            raise IndexValueError(
                f"the filter mask has {allowed_rows.size} entries for an index of {total - len(deleted)} rows"
            )
        mask[mask] = allowed_rows
    return mask


def rows_of(labels: np.ndarray, deleted: np.ndarray) -> np.ndarray:
    """The row positions of FAISS labels that are not deleted (each label less the deleted ones before it); -1,
    FAISS's 'no hit', stays -1."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, labels - np.searchsorted(deleted, labels), -1)


def _labels(deleted: np.ndarray | None) -> np.ndarray:
    return np.empty(0, np.int64) if deleted is None else np.asarray(deleted, dtype=np.int64)
