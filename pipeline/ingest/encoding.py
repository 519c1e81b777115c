"""Encoding one batch of documents into one shard: the step a local build loops over and a Ray actor runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.ingest.shards import ShardStore
from pipeline.records import full_text

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
    page_vector: bool = False,
) -> int:
    """Encode the documents (title and body, or their parts: see document_parts; one row per part) and write them
    as one shard; returns how many inputs were truncated."""
    inputs = [full_text(title, text) for title, text in zip(titles, texts)]
    ids, keys = list(ids), list(keys)
    if window_tokens is not None:
        windows = document_parts(encoder, inputs, window_tokens, page_vector)
        ids = [doc for doc, parts in zip(ids, windows) for _ in parts]
        keys = [key for key, parts in zip(keys, windows) for _ in parts]
        inputs = [part for parts in windows for part in parts]
    before = encoder.stats.truncated
    store.write(ids, keys, encoder.encode(inputs, kind="document", show_progress=False))
    return encoder.stats.truncated - before


def document_parts(
    encoder: HTPEncoder, inputs: Sequence[str], window_tokens: int, page_vector: bool
) -> list[list[str]]:
    """What a multi-vector index encodes of each document: its sentence windows of at most `window_tokens` tokens;
    with `page_vector`, the document itself first, followed by its windows only when the encoder truncates it (the
    page's own vector then misses its end)."""
    if not page_vector:
        return encoder.windows(inputs, window_tokens)
    long = [i for i, layout in enumerate(encoder.layouts(inputs)) if layout.truncated]
    windows = dict(zip(long, encoder.windows([inputs[i] for i in long], window_tokens)))
    return [[text, *windows.get(i, [])] for i, text in enumerate(inputs)]
