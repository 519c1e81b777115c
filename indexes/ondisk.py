"""IVF indexes bigger than memory: train once on a sample, add the vectors part by part into per-part indexes on
disk, then merge their inverted lists into one file that FAISS memory-maps at query time (FAISS's own recipe,
faiss.contrib.ondisk.merge_ondisk). Peak memory is one part plus the trained quantizer, not the whole index."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from indexes.errors import IndexValueError
from indexes.faiss_index import as_matrix, new_index

IVF_DATA = "index.ivfdata"  # the merged inverted lists, beside index.faiss in a version folder


def is_ivf(factory: str, dim: int) -> bool:
    """Whether a factory string makes an IVF index (the only kind whose lists can live on disk)."""
    return faiss.try_extract_index_ivf(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)) is not None


def build_on_disk(factory: str, dim: int, batches: Iterable[np.ndarray], train_sample: np.ndarray | None,
                  folder: Path, part_rows: int) -> faiss.Index:
    """An IVF index whose lists are in folder/IVF_DATA: every `part_rows` vectors are added (with their global
    row numbers as ids) to a copy of the trained empty index, written to disk and dropped; the parts are then
    merged into the file."""
    folder = Path(folder)
    parts_dir = folder / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    trained = new_index(factory, dim, train_sample)
    if faiss.try_extract_index_ivf(trained) is None:
        raise IndexValueError(f"index.on_disk needs an IVF factory (IVF1024,Flat, IVF4096,PQ48 ...), not {factory!r}")
    parts, offset = [], 0
    try:
        for number, batch in enumerate(_regrouped(batches, part_rows)):
            part = faiss.clone_index(trained)
            vectors = as_matrix(batch, dim, f"batch {number}")
            part.add_with_ids(vectors, np.arange(offset, offset + len(vectors), dtype=np.int64))
            offset += len(vectors)
            path = parts_dir / f"part-{number:05d}.index"
            faiss.write_index(part, str(path))
            parts.append(str(path))
            del part
        merged = faiss.clone_index(trained)
        if parts:
            from faiss.contrib.ondisk import merge_ondisk

            merge_ondisk(merged, parts, str(folder / IVF_DATA))
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return merged


def _regrouped(batches: Iterable[np.ndarray], rows: int) -> Iterable[np.ndarray]:
    """The same vectors in blocks of at least `rows` (the last may be short)."""
    held: list[np.ndarray] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch)
        if count >= rows:
            yield np.concatenate(held)
            held, count = [], 0
    if held:
        yield np.concatenate(held)


def read_index(path: Path, on_disk: bool) -> faiss.Index:
    """Read index.faiss; an on-disk IVF index maps the IVF_DATA file beside it, wherever the folder now is."""
    return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR if on_disk else 0)
