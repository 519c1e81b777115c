"""What `HTPEncoder.encode` hands back when called the sentence-transformers way: numpy or torch, and the
quantised precisions sentence-transformers offers (read its quantization.py; the same arithmetic is written here so
htp does not depend on that package)."""

from __future__ import annotations

import numpy as np
import torch

from htp.errors import EncoderValueError

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantised(vectors: np.ndarray, precision: str) -> np.ndarray:
    """float32 [n, d] vectors in `precision`: int8/uint8 scaled per dimension over these vectors' own range,
    binary/ubinary one bit per dimension (positive -> 1) packed eight to a byte (binary offset by -128)."""
    if precision == "float32":
        return vectors
    if precision in ("int8", "uint8") and not len(vectors):  # no texts: no range to scale by
        return vectors.astype(np.int8 if precision == "int8" else np.uint8)
    if precision in ("int8", "uint8"):
        starts = vectors.min(axis=0)
        steps = (vectors.max(axis=0) - starts) / 255
        scaled = (vectors - starts) / np.where(steps > 0, steps, 1)
        return (scaled - 128).astype(np.int8) if precision == "int8" else scaled.astype(np.uint8)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    raise EncoderValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def converted(vectors: np.ndarray, single: bool, to_tensor: bool, to_numpy: bool) -> np.ndarray | torch.Tensor | list:
    """The output as sentence-transformers shapes it: 1-D for a single text, a tensor, an array, or a list of
    1-D tensors when neither conversion is asked for."""
    if to_tensor:
        out = torch.from_numpy(np.ascontiguousarray(vectors))
        return out[0] if single else out
    if to_numpy:
        return vectors[0] if single else vectors
    rows = [torch.from_numpy(np.ascontiguousarray(row)) for row in vectors]
    return rows[0] if single else rows
