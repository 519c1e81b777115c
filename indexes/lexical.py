"""A BM25 index beside the dense one, with bm25s: lower-cased, English stopwords, no stemming.

Tokenisation is fixed (no optional stemmer that would depend on what a machine has installed), so the same
corpus gives the same index and the same scores everywhere; the measured BM25 figures in README.md use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bm25s
import numpy as np

from indexes.errors import IndexMissingError, IndexValueError

logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG, which `htp -v` would print


def _tokens(texts: list[str], ids: bool):
    """bm25s tokens of texts: ids plus vocabulary for indexing, word lists for queries."""
    return bm25s.tokenize(texts, lower=True, stopwords="en", return_ids=ids, show_progress=False)


def build_bm25(texts: list[str]) -> bm25s.BM25:
    """Index texts in order: row i of the results is texts[i]."""
    if not texts:
        raise IndexValueError("build_bm25 needs at least one text")
    model = bm25s.BM25()
    model.index(_tokens(texts, ids=True), show_progress=False)
    return model


def save_bm25(model: bm25s.BM25, folder: Path) -> None:
    """Write the index's arrays and vocabulary into `folder`."""
    model.save(str(folder))


def load_bm25(folder: Path) -> bm25s.BM25:
    """Read an index written by save_bm25 (arrays memory-mapped)."""
    if not (Path(folder) / "params.index.json").is_file():
        raise IndexMissingError(f"no BM25 index in {folder}: write one with save_bm25")
    try:
        return bm25s.BM25.load(str(folder), mmap=True)
    except (ValueError, OSError, KeyError) as err:  # bm25s reads JSON and .npy files and names neither when they fail
        raise IndexValueError(
            f"the BM25 index in {folder} is damaged ({err.__class__.__name__}: {err}); rebuild the index"
        ) from err


def search_bm25(
    model: bm25s.BM25, queries: list[str], k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores float32 [q,k], row positions int64 [q,k]); k clipped to the corpus size, non-matches are -1;
    `allowed` (a bool per document) scores only those documents."""
    if k < 1:
        raise IndexValueError(f"k must be at least 1, got {k}")
    k = min(k, int(model.scores["num_docs"]))
    if not queries:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    mask = None if allowed is None else np.asarray(allowed, dtype=np.float32)
    rows, scores = model.retrieve(_tokens(queries, ids=False), k=k, show_progress=False, n_threads=1, weight_mask=mask)
    rows = np.where(scores > 0, rows, -1).astype(np.int64)
    return scores.astype(np.float32), rows
