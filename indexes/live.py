"""Changing a FAISS index in place for a live add or delete: remove rows and append vectors so that each row's
label stays its position (what ids.parquet maps), without re-adding the rows that stay. Flat-code indexes (Flat,
PQ, SQ) compact themselves on removal; an IVF index with its lists in memory keeps the removed rows' gaps, so the
labels left in its lists are renumbered; HNSW can take additions but not removals (FAISS's graph has no delete),
so its removed rows are marked deleted instead (indexes.deleted)."""

from __future__ import annotations

import faiss
import numpy as np


def _inner(index: faiss.Index) -> faiss.Index:
    """The index under any pre-transforms (OPQ, PCA), whose remove_ids and add pass straight through."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _memory_lists(index: faiss.Index) -> faiss.ArrayInvertedLists | None:
    """The inverted lists of an IVF index (under pre-transforms only) when they live in memory, not on disk."""
    ivf = _inner(index)
    if not isinstance(ivf, faiss.IndexIVF) or ivf.invlists is None or ivf.direct_map.type != 0:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.ArrayInvertedLists) else None


def can_change(index: faiss.Index, removes: bool) -> bool:
    """Whether `change` can update this index (removals too when `removes`); otherwise it must be rebuilt. Only
    flat codes, in-memory IVF and (for additions) HNSW, each under pre-transforms at most: a refine wrapper or
    anything else is rebuilt."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexFlatCodes) or _memory_lists(index) is not None:
        return True
    return not removes and isinstance(inner, faiss.IndexHNSW)


def marks_deleted(index: faiss.Index) -> bool:
    """Whether removals from this index are marked deleted rather than removed: HNSW, under pre-transforms at most."""
    return isinstance(_inner(index), faiss.IndexHNSW)


def change(index: faiss.Index, removed: np.ndarray, added: np.ndarray) -> None:
    """Remove the rows `removed` (positions) and append `added` vectors [n, d]; the rows left keep their order,
    the added ones follow. Call only when can_change says so."""
    index = faiss.downcast_index(index)
    removed = np.unique(np.asarray(removed, dtype=np.int64))
    if len(removed):
        lists = None if isinstance(_inner(index), faiss.IndexFlatCodes) else _memory_lists(index)
        gone = index.remove_ids(faiss.IDSelectorBatch(len(removed), faiss.swig_ptr(removed)))
        if gone != len(removed):
            raise ValueError(f"{gone} of {len(removed)} rows were removed from the FAISS index")
        if lists is not None:
            _renumber(lists, removed)
    if len(added):
        index.add(np.ascontiguousarray(added, dtype=np.float32))


def _renumber(lists: faiss.ArrayInvertedLists, removed: np.ndarray) -> None:
    """Each label left in the lists becomes its row's new position: the old one less the removed rows before it.
    The lists' id arrays are edited where they lie (a view of FAISS's memory), no codes are touched."""
    for number in range(lists.nlist):
        size = lists.list_size(number)
        if size:
            labels = faiss.rev_swig_ptr(lists.get_ids(number), size)
            labels -= np.searchsorted(removed, labels)
