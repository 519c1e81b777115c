"""Building and searching FAISS indexes over L2-normalised float32 vectors with inner product."""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

EF_CONSTRUCTION = 80
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 128


def build_faiss(factory: str, dim: int, batches: Iterable[np.ndarray], train_sample: np.ndarray | None) -> faiss.Index:
    """Create from a factory string, train on the sample when the index needs it, then add batch by batch."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.efConstruction = EF_CONSTRUCTION
    if not index.is_trained:
        if train_sample is None or len(train_sample) == 0:
            raise ValueError(f"index {factory!r} must be trained: give a sample of vectors")
        try:
            index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
        except RuntimeError as err:
            raise ValueError(f"training {factory!r} on {len(train_sample)} vectors failed: "
                             f"{str(err).splitlines()[-1].split('failed: ')[-1]}") from err
    for batch in batches:
        index.add(np.ascontiguousarray(batch, dtype=np.float32))
    return index


def _hnsw(index: faiss.Index) -> faiss.HNSW | None:
    """The HNSW graph of an HNSW index, or None."""
    inner = faiss.downcast_index(index)
    return inner.hnsw if hasattr(inner, "hnsw") else None


def search_faiss(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int | None = None,
                 ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row positions) per query; k is clipped to the index size, missing hits are -1."""
    k = max(1, min(k, index.ntotal))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(nprobe or DEFAULT_NPROBE, ivf.nlist)
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.efSearch = max(ef_search or DEFAULT_EF_SEARCH, k)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, rows
