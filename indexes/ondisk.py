"""IVF indexes bigger than memory: train once on a sample, add the vectors part by part into per-part indexes on
disk, then merge their inverted lists into one file that FAISS memory-maps at query time (FAISS's own recipe,
faiss.contrib.ondisk.merge_ondisk). Peak memory is one part plus the trained quantizer, not the whole index.
Parts are independent, so they can be written by several processes (the Ray engine's tasks) and merged here."""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from indexes.errors import IndexValueError
from indexes.faiss_index import as_matrix, new_index

IVF_DATA = "index.ivfdata"  # the merged inverted lists, beside index.faiss in a version folder
PARTS = "parts"


def is_ivf(factory: str, dim: int) -> bool:
    """Whether a factory string makes an IVF index (the only kind whose lists can live on disk)."""
    return faiss.try_extract_index_ivf(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)) is not None


def trained_ivf(factory: str, dim: int, train_sample: np.ndarray | None) -> faiss.Index:
    """The empty IVF index every part starts from, trained on the sample."""
    trained = new_index(factory, dim, train_sample)
    if faiss.try_extract_index_ivf(trained) is None:
        raise IndexValueError(f"index.on_disk needs an IVF factory (IVF1024,Flat, IVF4096,PQ48 ...), not {factory!r}")
    return trained


def write_part(trained: faiss.Index, vectors: np.ndarray, first_row: int, path: Path) -> Path:
    """Add vectors (ids: their global row numbers from `first_row`) to a copy of the trained index and write it."""
    part = faiss.clone_index(trained)
    vectors = as_matrix(vectors, trained.d, f"part {path.name}")
    part.add_with_ids(vectors, np.arange(first_row, first_row + len(vectors), dtype=np.int64))
    faiss.write_index(part, str(path))
    return path


def write_parts(trained: faiss.Index, batches: Iterable[np.ndarray], folder: Path, part_rows: int) -> list[Path]:
    """Parts under folder/PARTS, one every `part_rows` vectors of `batches` in order (the local way to write them;
    the Ray engine writes the same parts with write_part in its tasks)."""
    (Path(folder) / PARTS).mkdir(parents=True, exist_ok=True)
    parts, offset = [], 0
    for number, batch in enumerate(_regrouped(batches, part_rows)):
        parts.append(write_part(trained, batch, offset, Path(folder) / PARTS / f"part-{number:05d}.index"))
        offset += len(batch)
    return parts


def merge_parts(trained: faiss.Index, parts: list[Path], folder: Path) -> faiss.Index:
    """The trained index with every part's lists merged into folder/IVF_DATA; the parts are removed."""
    merged = faiss.clone_index(trained)
    try:
        if parts:
            from faiss.contrib.ondisk import merge_ondisk

            with _faiss_prints_to_stderr():
                merge_ondisk(merged, [str(p) for p in parts], str(Path(folder) / IVF_DATA))
    finally:
        shutil.rmtree(Path(folder) / PARTS, ignore_errors=True)
    return merged


def build_on_disk(
    factory: str, dim: int, batches: Iterable[np.ndarray], train_sample: np.ndarray | None, folder: Path, part_rows: int
) -> faiss.Index:
    """An IVF index whose lists are in folder/IVF_DATA, its parts (every `part_rows` vectors) written in turn."""
    trained = trained_ivf(factory, dim, train_sample)
    try:
        parts = write_parts(trained, batches, folder, part_rows)
    except BaseException:
        shutil.rmtree(Path(folder) / PARTS, ignore_errors=True)
        raise
    return merge_parts(trained, parts, folder)


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
    if not on_disk:
        return faiss.read_index(str(path))
    with _faiss_prints_to_stderr():
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)


@contextmanager
def _faiss_prints_to_stderr() -> Iterator[None]:
    """Send what FAISS's C++ prints with printf (on-disk lists report their file) to stderr, so stdout stays the
    command's own output (`--json`); contextlib.redirect_stdout cannot, as it swaps only Python's sys.stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # what C's stdio still buffers goes to stderr too
        os.dup2(saved, 1)
        os.close(saved)
