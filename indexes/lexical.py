"""A BM25 index beside the dense one, with bm25s (English stopwords, lower-casing)."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np


def _tokens(texts: list[str]):
    return bm25s.tokenize(texts, lower=True, stopwords="en", show_progress=False)


def build_bm25(texts: list[str]) -> bm25s.BM25:
    """Index texts in order: row i of the results is texts[i]."""
    model = bm25s.BM25()
    model.index(_tokens(texts), show_progress=False)
    return model


def save_bm25(model: bm25s.BM25, folder: Path) -> None:
    """Write the index's arrays and vocabulary into `folder`."""
    model.save(str(folder))


def load_bm25(folder: Path) -> bm25s.BM25:
    """Read an index written by save_bm25 (memory-mapped)."""
    return bm25s.BM25.load(str(folder), mmap=True)


def search_bm25(model: bm25s.BM25, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row positions) per query; k clipped to the corpus size; rows scoring 0 are -1."""
    k = max(1, min(k, int(model.scores["num_docs"])))
    rows, scores = model.retrieve(_tokens(queries), k=k, show_progress=False, n_threads=1)
    rows = np.where(scores > 0, rows, -1).astype(np.int64)
    return scores.astype(np.float32), rows
