"""Choosing and checking FAISS index_factory strings; `auto` picks by corpus size and memory budget."""

from __future__ import annotations

import math
import re

import faiss

FLAT_MAX = 20_000
HNSW_MAX = 1_000_000
HNSW_LINKS = 32
MIN_TRAIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid


def ivf_lists(n_vectors: int) -> int:
    """IVF list count ~ 4*sqrt(n) as a power of two, lowered until each list has 39 training points."""
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(n_vectors))))
    while nlist > 1 and nlist * MIN_TRAIN_PER_LIST > n_vectors:
        nlist //= 2
    return nlist


def choose_factory(n_vectors: int, dim: int, memory_budget_bytes: int) -> str:
    """The `auto` rule, after autofaiss: exact search while small, graph while it fits, compressed IVF beyond.

    Flat below 20k vectors (exact and fast enough) when it fits; HNSW32 up to 1M vectors when vectors plus
    links fit the budget; else IVF{nlist},PQ{m} with nlist ~ 4*sqrt(n) (a power of two, at most n/39) and
    the largest m dividing dim, at most dim/4, whose codes fit the budget.
    """
    flat_bytes = n_vectors * dim * 4
    if n_vectors < FLAT_MAX and flat_bytes <= memory_budget_bytes:
        return "Flat"
    if n_vectors < HNSW_MAX and n_vectors * (dim * 4 + HNSW_LINKS * 2 * 4) <= memory_budget_bytes:
        return f"HNSW{HNSW_LINKS}"
    fitting = [m for m in range(1, dim // 4 + 1) if dim % m == 0 and n_vectors * m <= memory_budget_bytes]
    if not fitting:
        raise ValueError(f"{n_vectors} vectors do not fit a {memory_budget_bytes / 2**20:.0f} MB budget even as "
                         "1-byte PQ codes: raise index.memory_budget_mb")
    return f"IVF{ivf_lists(n_vectors)},PQ{max(fitting)}"


def resolve_factory(spec: str, n_vectors: int, dim: int, memory_budget_bytes: int) -> str:
    """`auto` -> choose_factory; any other string is checked by building it, with a message naming it."""
    if spec == "auto":
        return choose_factory(n_vectors, dim, memory_budget_bytes)
    try:
        faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"index factory {spec!r} is not a FAISS index_factory string for dimension {dim}: "
                         f"{str(err).splitlines()[-1]}") from err
    match = re.search(r"IVF(\d+)", spec)
    if match and int(match.group(1)) > n_vectors:
        raise ValueError(f"index factory {spec!r} needs at least {match.group(1)} vectors to train its lists, "
                         f"but there are {n_vectors}: use fewer lists, Flat, or auto")
    return spec


def needs_training(factory: str, dim: int) -> bool:
    """Whether the index must see a training sample before vectors are added (IVF, PQ, ...)."""
    return not faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained
