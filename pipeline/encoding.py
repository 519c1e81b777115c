"""Encoding one batch of documents into one shard: the step a local build loops over and a Ray actor runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.records import full_text
from pipeline.shards import ShardStore

if TYPE_CHECKING:
    from htp import HTPEncoder


def encode_into(
    store: ShardStore,
    encoder: HTPEncoder,
    ids: Sequence[str],
    titles: Sequence[str],
    texts: Sequence[str],
    keys: Sequence[str],
    window_tokens: int | None,
) -> int:
    """Encode the documents (title and body; cut into sentence windows of at most `window_tokens` tokens when set,
    one row per window) and write them as one shard; returns how many inputs were truncated."""
    inputs = [full_text(title, text) for title, text in zip(titles, texts)]
    ids, keys = list(ids), list(keys)
    if window_tokens is not None:
        windows = encoder.windows(inputs, window_tokens)
        ids = [doc for doc, parts in zip(ids, windows) for _ in parts]
        keys = [key for key, parts in zip(keys, windows) for _ in parts]
        inputs = [part for parts in windows for part in parts]
    before = encoder.stats.truncated
    store.write(ids, keys, encoder.encode(inputs, kind="document", show_progress=False))
    return encoder.stats.truncated - before
