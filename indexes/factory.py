"""Choosing and checking FAISS index_factory strings; `auto` picks by corpus size and memory budget."""

from __future__ import annotations

import math
import re

import faiss

from indexes.errors import IndexValueError

FLAT_MAX = 20_000
HNSW_MAX = 1_000_000
HNSW_LINKS = 32
MIN_TRAIN_PER_LIST = 39  # FAISS warns below 39 training points per k-means centroid


def ivf_lists(n_vectors: int) -> int:
    """IVF list count: 4*sqrt(n) rounded to a power of two, halved until every list has 39 training points."""
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(max(1, n_vectors)))))
    while nlist > 1 and nlist * MIN_TRAIN_PER_LIST > n_vectors:
        nlist //= 2
    return nlist


def choose_factory(n_vectors: int, dim: int, memory_budget_bytes: int) -> str:
    """The `auto` rule, after autofaiss: exact search while small, a graph while it fits, compressed IVF beyond.

    - "Flat" when n < 20,000 and the raw vectors (n*dim*4 bytes) fit the budget: exact and fast enough.
    - "HNSW32" when n < 1,000,000 and vectors plus graph links (n*(dim*4 + 32*2*4) bytes) fit the budget.
    - else "IVF{nlist},PQ{m}": nlist = 4*sqrt(n) rounded to a power of two, halved until n >= 39*nlist;
      m = the largest divisor of dim that is at most dim/4 and whose codes (n*m bytes) fit the budget.
    """
    if n_vectors < 1 or dim < 1 or memory_budget_bytes < 1:
        raise IndexValueError(
            f"choose_factory needs positive sizes, got n_vectors={n_vectors}, dim={dim}, "
            f"memory_budget_bytes={memory_budget_bytes}"
        )
    if n_vectors < FLAT_MAX and n_vectors * dim * 4 <= memory_budget_bytes:
        return "Flat"
    if n_vectors < HNSW_MAX and n_vectors * (dim * 4 + HNSW_LINKS * 2 * 4) <= memory_budget_bytes:
        return f"HNSW{HNSW_LINKS}"
    fitting = [m for m in range(1, dim // 4 + 1) if dim % m == 0 and n_vectors * m <= memory_budget_bytes]
    if not fitting:
        raise IndexValueError(
            f"{n_vectors} vectors do not fit a {memory_budget_bytes / 2**20:.1f} MB budget even as "
            "1-byte PQ codes: raise index.memory_budget_mb"
        )
    return f"IVF{ivf_lists(n_vectors)},PQ{max(fitting)}"


def resolve_factory(spec: str, n_vectors: int, dim: int, memory_budget_bytes: int) -> str:
    """`auto` -> choose_factory; any other string is checked by building it, and refused with its name if bad."""
    if spec == "auto":
        return choose_factory(n_vectors, dim, memory_budget_bytes)
    try:
        faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise IndexValueError(
            f"index factory {spec!r} is not a valid FAISS index_factory string for dimension {dim} "
            f"({faiss_reason(err)}): fix it or use auto"
        ) from err
    lists = re.search(r"IVF(\d+)", spec)
    if lists and int(lists.group(1)) > n_vectors:
        raise IndexValueError(
            f"too few vectors to train IVF{lists.group(1)} in {spec!r}: it needs at least "
            f"{lists.group(1)} vectors and there are {n_vectors}; use fewer lists, Flat, or auto"
        )
    return spec


def needs_training(factory: str, dim: int) -> bool:
    """Whether the index must see a training sample before vectors are added (IVF, PQ, ...)."""
    return not faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained


def faiss_reason(err: RuntimeError) -> str:
    """The human part of a FAISS C++ error, without its source location and failed assertion."""
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: '.*' failed: )?", "", str(err).strip().splitlines()[-1])
