"""What one build's stages share, passed to each of them as one object that carries the configuration beside what
the stages derive from it (the shard store, the documents' keys and where they are stored, the encoder loaded on
first use), and how it is made, for a build or a live change."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from pipeline.config import Config, config_hash
from pipeline.ingest.load import FieldNames, LoadResult, iter_batches
from pipeline.ingest.shards import GATHER_BATCH, Located, ShardStore, document_keys
from pipeline.vectors import prepare

if TYPE_CHECKING:
    import datasets

    from htp import HTPEncoder


@dataclass
class BuildContext:
    """What every stage of one build reads: its settings, the loaded input and its document keys, the shard store
    and where each stored document is (`located`, refreshed by `relocate` after encoding), and the encoder (loaded
    on first use)."""

    config: Config
    input_path: Path
    index_dir: Path
    fields: FieldNames
    loaded: LoadResult
    keys: list[str]
    store: ShardStore
    located: Located
    encoder: Callable[[], HTPEncoder]
    built_with: dict
    metadata: tuple[pa.Table, dict[str, str]] | None = None  # the documents' metadata columns and their types
    scanned: set[Path] = field(default_factory=set)  # the shards `located` was read from

    def relocate(self) -> None:
        """Add where the input's documents in shards written since are (only those shards are read; what was
        found before stays where it was)."""
        fresh = [path for path in self.store.shards() if path not in self.scanned]
        self.located = {**self.store.locate(fresh, set(self.keys)), **self.located}
        self.scanned.update(fresh)

    def missing(self) -> list[int]:
        """Input rows whose vectors are not stored."""
        return [row for row, key in enumerate(self.keys) if key not in self.located]

    def vectors(self, center: np.ndarray | None, desc: str) -> Iterator[np.ndarray]:
        """Prepared vectors of every input document in input order, a batch at a time, with a progress bar."""
        batches = self.store.gather(self.keys, self.located)
        total = -(-len(self.keys) // GATHER_BATCH)
        return (prepare(vectors, center) for _, vectors in tqdm(batches, desc=desc, unit="batch", total=total))


SHARDS = "shards"


def encoder_key(config: Config) -> str:
    """Hash of what decides the stored vectors: the resolved encoder settings (runtime knobs such as device
    excluded) and, for multi-vector indexes, the window size and whether each page keeps its own vector."""
    settings = config.encoder.vector_settings()
    if config.index.window_tokens is not None:
        settings = {**settings, "window_tokens": config.index.window_tokens}
    if config.index.page_vector:
        settings = {**settings, "page_vector": True}
    return config_hash(settings)


def input_keys(dataset: datasets.Dataset) -> list[str]:
    """The document key (hash of id, title and text) of every input document, in input order."""
    return [
        key
        for batch in iter_batches(dataset, 4096)
        for key in document_keys(batch["id"], batch["title"], batch["text"])
    ]


def field_names(config: Config) -> FieldNames:
    """The input's field names as config.yaml's `data:` gives them."""
    return FieldNames(
        id_field=config.data.id_field,
        title_field=config.data.title_field,
        text_field=config.data.text_field,
        metadata=config.data.metadata_fields,
    )


def sample_rows(count: int, limit: int, seed: int) -> np.ndarray:
    """At most `limit` of `count` rows, uniformly at random, sorted."""
    return np.sort(np.random.default_rng(seed).choice(count, size=min(limit, count), replace=False))


def shard_store(config: Config, index_dir: Path) -> ShardStore:
    """The index folder's store of vectors made with this configuration's encoder settings."""
    key = encoder_key(config)
    return ShardStore(index_dir / SHARDS / key, key)


def build_context(
    config: Config,
    input_path: Path,
    index_dir: Path,
    loaded: LoadResult,
    encoder: HTPEncoder | None,
    built_with: dict,
    metadata: tuple[pa.Table, dict[str, str]] | None = None,
) -> BuildContext:
    """The context of a build (or a live change) of `loaded` into `index_dir`: its shard store (leftovers of
    killed writes removed), the documents' keys and where the stored ones are, and the encoder, loaded on first
    use unless `encoder` is given. Call under the index folder's lock."""
    store = shard_store(config, index_dir)
    store.remove_leftovers()

    @functools.cache
    def loaded_encoder() -> HTPEncoder:
        from htp.encoder import HTPEncoder  # here, so a change that encodes nothing imports no torch

        return encoder or HTPEncoder(config.encoder)

    keys = input_keys(loaded.dataset)
    shards = store.shards()
    located = store.locate(shards, set(keys))
    return BuildContext(
        config,
        input_path,
        index_dir,
        field_names(config),
        loaded,
        keys,
        store,
        located,
        loaded_encoder,
        built_with,
        metadata,
        set(shards),
    )
