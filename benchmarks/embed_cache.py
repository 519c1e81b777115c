"""Embeddings at every exit layer of one encoder setting, cached on disk, for the sweep and quality benchmarks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from htp import EncoderConfig, HTPEncoder


def cached_layers(
    cache: Path, tag: str, texts: Sequence[str], config: EncoderConfig, kind: str, encoder: HTPEncoder | None = None
) -> np.ndarray:
    """[n_layers, n, d] embeddings at exits 1..n_layers, computed once per (texts, config, kind) and kept as .npy."""
    key = hashlib.sha256(json.dumps([list(texts), config.to_dict(), kind]).encode()).hexdigest()[:16]
    path = cache / f"{tag}-{kind}-{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    encoder = encoder or HTPEncoder(config)
    vectors = encoder.encode_layers(texts, list(range(1, encoder.n_layers + 1)), kind=kind, show_progress=True)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.rename(path)
    return vectors
