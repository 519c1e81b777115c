"""Post-encoding vector transforms shared by build and query: corpus-mean centering, then unit length."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.errors import PipelineValueError


def streamed_mean(batches: Iterable[np.ndarray]) -> np.ndarray:
    """Mean vector over batches without holding them all (float64 accumulator)."""
    total, count = None, 0
    for batch in batches:
        part = batch.astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
        count += len(batch)
    if total is None:
        raise PipelineValueError("cannot take the mean of no vectors")
    return (total / count).astype(np.float32)


def prepare(vectors: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Subtract the corpus mean (when fitted) and re-normalise, so inner product stays cosine similarity."""
    out = np.asarray(vectors, dtype=np.float32)
    if center is not None:
        out = out - center
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)
