"""Building and searching FAISS indexes over L2-normalised float32 vectors with inner product."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faiss
import numpy as np

from indexes.errors import IndexValueError
from indexes.factory import faiss_reason
from indexes.params import DEFAULT_EF_SEARCH, DEFAULT_NPROBE

EF_CONSTRUCTION = 80
# An HNSW search filtered to at most this many rows scores them all instead: exact, and faster (benchmarks/filters:
# at 100k documents, 30,000 matching rows take 4.3 ms exactly; the filtered graph walk lost recall below 30%).
EXACT_ROWS = 32_768
MAX_EF = 4096  # the most a filter may widen HNSW's efSearch to: a client's filter cannot buy unbounded work


def build_faiss(factory: str, dim: int, batches: Iterable[np.ndarray], train_sample: np.ndarray | None) -> faiss.Index:
    """Create from a factory string, train on the sample when the index needs it, then add batch by batch."""
    index = new_index(factory, dim, train_sample)
    for number, batch in enumerate(batches):
        index.add(as_matrix(batch, dim, f"batch {number}"))
    return index


def new_index(factory: str, dim: int, train_sample: np.ndarray | None) -> faiss.Index:
    """An empty index from a factory string, configured, and trained on the sample when it needs training."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    core = _core(index)
    if isinstance(core, faiss.IndexHNSW):
        core.hnsw.efConstruction = EF_CONSTRUCTION
    if hasattr(core, "do_polysemous_training"):
        core.do_polysemous_training = False  # only serves Hamming-filtered search, which is never used here
    if not index.is_trained:
        _train(index, factory, dim, train_sample)
    return index


def _core(index: faiss.Index) -> faiss.Index:
    """The index under any pre-transform (OPQ, PCA, ...), downcast to its concrete class."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def _train(index: faiss.Index, factory: str, dim: int, sample: np.ndarray | None) -> None:
    """Train on the sample, refusing one too small for the IVF lists before FAISS does."""
    if sample is None or len(sample) == 0:
        raise IndexValueError(f"index {factory!r} must be trained before adding vectors: give a train_sample")
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and len(sample) < ivf.nlist:
        raise IndexValueError(
            f"train_sample has {len(sample)} vectors but {factory!r} has {ivf.nlist} lists to train: "
            "give a larger sample or use fewer lists"
        )
    try:
        index.train(as_matrix(sample, dim, "train_sample"))
    except RuntimeError as err:
        raise IndexValueError(
            f"training {factory!r} on {len(sample)} vectors failed: {faiss_reason(err)}; "
            "give a larger sample or a smaller index"
        ) from err


def as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """A C-contiguous float32 [n, dim] array, or a ValueError saying which input has the wrong shape."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise IndexValueError(
            f"{what} has shape {vectors.shape}, expected [n, {dim}]: vectors must match the index dimension"
        )
    return vectors


def search_faiss(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    nprobe: int | None = None,
    ef_search: int | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores float32 [q,k], row positions int64 [q,k]); k clipped to the index size, missing rows are -1.

    nprobe defaults to 16 (capped at the list count) for IVF indexes, efSearch to max(128, k) for HNSW. `allowed`
    (a bool per row) restricts the search to those rows inside FAISS (an IDSelector), so k hits come back whenever
    k rows are allowed: nprobe and efSearch grow as the filter thins the index out, a query that still finds fewer
    is searched again exhaustively (every IVF list; for HNSW, the matching rows scored exactly), an HNSW search
    allowed at most EXACT_ROWS rows scores those rows exactly at once, and so does an index type whose search
    takes no parameters (PQ, refine).
    """
    if k < 1:
        raise IndexValueError(f"k must be at least 1, got {k}")
    queries = as_matrix(queries, index.d, "queries")
    k = min(k, index.ntotal)
    if k == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    hnsw = isinstance(_core(index), faiss.IndexHNSW)
    probes = min(nprobe or DEFAULT_NPROBE, ivf.nlist) if ivf is not None else 0
    ef = max(ef_search or DEFAULT_EF_SEARCH, k)
    if allowed is None:
        space = faiss.ParameterSpace()
        if ivf is not None:
            space.set_index_parameter(index, "nprobe", probes)
        if hnsw:
            space.set_index_parameter(index, "efSearch", ef)
        return index.search(queries, k)
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (index.ntotal,):
        raise IndexValueError(f"the filter mask has {allowed.size} entries for an index of {index.ntotal} rows")
    matching = int(np.count_nonzero(allowed))
    if hnsw and matching <= EXACT_ROWS:  # scoring the matches beats walking a graph that is mostly filtered out
        return _exact(index, queries, k, np.flatnonzero(allowed))
    # A filter leaves a share of each list or neighbourhood: search as many more of them as it thins out (bounded).
    thinning = index.ntotal / max(matching, 1)
    probes = min(ivf.nlist, int(np.ceil(probes * thinning))) if ivf is not None else 0
    ef = min(index.ntotal, MAX_EF, max(ef, int(np.ceil(ef * thinning))))
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # its size is in bytes
    try:
        scores, rows = index.search(queries, k, params=_params(index, selector, probes, ef, hnsw))
    except RuntimeError:  # an index type whose search takes no parameters (PQ, refine): score the matches
        return _exact(index, queries, k, np.flatnonzero(allowed))
    wanted = min(k, matching)
    short = np.flatnonzero((rows >= 0).sum(axis=1) < wanted)
    if len(short) and ivf is not None:
        exhaustive = _params(index, selector, ivf.nlist, 0, False)
        scores[short], rows[short] = index.search(queries[short], k, params=exhaustive)
    elif len(short) and hnsw:  # the graph walk came back short: score the matching rows, a bounded amount of work
        scores[short], rows[short] = _exact(index, queries[short], k, np.flatnonzero(allowed))
    return scores, rows


def _exact(index: faiss.Index, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over the given rows by their stored vectors (reconstructed from the index EXACT_ROWS at a time, so
    memory stays bounded), padded with -1."""
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(rows), EXACT_ROWS):
        chunk = rows[start : start + EXACT_ROWS]
        products = queries @ index.reconstruct_batch(chunk).T
        merged_scores = np.concatenate([scores, products], axis=1)
        merged_rows = np.concatenate([found, np.broadcast_to(chunk, products.shape)], axis=1)
        top = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        scores, found = np.take_along_axis(merged_scores, top, axis=1), np.take_along_axis(merged_rows, top, axis=1)
    found[~np.isfinite(scores)] = -1
    return scores.astype(np.float32), found


def _params(index: faiss.Index, selector: faiss.IDSelector, nprobe: int, ef: int, hnsw: bool) -> Any:
    """Search parameters carrying the selector, for the index's kind (under any pre-transform). FAISS's SWIG classes
    take their fields as attributes, which its type stubs do not list, hence Any."""
    api: Any = faiss
    if nprobe:
        params = api.SearchParametersIVF()
        params.nprobe = nprobe
    elif hnsw:
        params = api.SearchParametersHNSW()
        params.efSearch = ef
    else:
        params = api.SearchParameters()
    params.sel = selector
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        outer = api.SearchParametersPreTransform()
        outer.index_params = params
        return outer
    return params
