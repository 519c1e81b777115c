"""What one build's stages share, passed to each of them instead of the whole configuration plus a handful of
loose arguments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from htp import HTPEncoder
from pipeline.config import Config
from pipeline.load import FieldNames, LoadResult
from pipeline.shards import GATHER_BATCH, Located, ShardStore
from pipeline.vectors import prepare


@dataclass
class BuildContext:
    """What every stage of one build reads: its settings, the loaded input and its document keys, the shard store
    and where each stored document is (`where`, refreshed by `relocate` after encoding), and the encoder (loaded
    on first use)."""

    config: Config
    input_path: Path
    index_dir: Path
    fields: FieldNames
    loaded: LoadResult
    keys: list[str]
    store: ShardStore
    where: Located
    encoder: Callable[[], HTPEncoder]
    built_with: dict
    metadata: tuple[pa.Table, dict[str, str]] | None = None  # the documents' metadata columns and their types

    def relocate(self) -> None:
        """Add where the documents of shards written since are (only those shards are read; what was found
        before stays where it was)."""
        known = {path for path, _, _ in self.where.values()}
        self.where = {**self.store.locate([p for p in self.store.shards() if p not in known]), **self.where}

    def missing(self) -> list[int]:
        """Input rows whose vectors are not stored."""
        return [row for row, key in enumerate(self.keys) if key not in self.where]

    def vectors(self, center: np.ndarray | None, desc: str) -> Iterator[np.ndarray]:
        """Prepared vectors of every input document in input order, a batch at a time, with a progress bar."""
        batches = self.store.gather(self.keys, self.where)
        total = -(-len(self.keys) // GATHER_BATCH)
        return (prepare(vectors, center) for _, vectors in tqdm(batches, desc=desc, unit="batch", total=total))
