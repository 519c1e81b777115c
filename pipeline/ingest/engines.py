"""Where a build's heavy work runs, behind one small interface: encode the documents whose vectors are not stored
yet, and write an on-disk IVF index's parts. The local engine does both in this process; the Ray engine hands
them to a Ray cluster (pipeline.ingest.ray_engine, imported only when chosen), so the build itself never branches on
the engine."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexes.ondisk import write_parts
from pipeline.ingest.context import BuildContext
from pipeline.ingest.encoding import encode_into

log = logging.getLogger(__name__)


class Engine(Protocol):
    """The two jobs a build hands to an engine."""

    def encode_missing(self, ctx: BuildContext) -> tuple[int, int]:
        """Encode the documents whose vectors are not stored, into ctx.store; returns (encoded, truncated)."""

    def write_ivf_parts(
        self, ctx: BuildContext, trained: faiss.Index, center: np.ndarray | None, part_rows: int, folder: Path
    ) -> list[Path]:
        """Write the on-disk IVF index's parts (about `part_rows` vectors each, in input order) under `folder`."""


class LocalEngine:
    """Everything in this process: encoding a shard at a time, each written atomically."""

    def encode_missing(self, ctx: BuildContext) -> tuple[int, int]:
        missing = ctx.missing()
        truncated = 0
        if missing:
            model = ctx.encoder()
            size = ctx.config.index.shard_size
            with tqdm(total=len(missing), desc="encode", unit="doc") as bar:
                for start in range(0, len(missing), size):
                    rows = missing[start : start + size]
                    batch = ctx.loaded.dataset[rows]
                    truncated += encode_into(
                        ctx.store,
                        model,
                        batch["id"],
                        batch["title"],
                        batch["text"],
                        [ctx.keys[row] for row in rows],
                        ctx.config.index.window_tokens,
                        ctx.config.index.page_vector,
                    )
                    bar.update(len(rows))
            ctx.relocate()
        return len(missing), truncated

    def write_ivf_parts(
        self, ctx: BuildContext, trained: faiss.Index, center: np.ndarray | None, part_rows: int, folder: Path
    ) -> list[Path]:
        return write_parts(trained, ctx.vectors(center, "index parts"), folder, part_rows)


class RayEngine:
    """Encoding by a Ray Data job and IVF parts by Ray tasks. The workers read the input themselves; anything
    they read differently from this process is encoded here afterwards, so the build matches what was loaded."""

    def encode_missing(self, ctx: BuildContext) -> tuple[int, int]:
        from pipeline.ingest.ray_engine import encode_with_ray

        encoded, truncated = encode_with_ray(
            ctx.input_path, ctx.loaded, ctx.fields, ctx.config, ctx.store, set(ctx.located)
        )
        ctx.relocate()
        here, here_truncated = LocalEngine().encode_missing(ctx)
        if here:
            log.warning(f"ray: the workers read {here} document(s) differently from this process; encoded them here")
        return encoded + here, truncated + here_truncated

    def write_ivf_parts(
        self, ctx: BuildContext, trained: faiss.Index, center: np.ndarray | None, part_rows: int, folder: Path
    ) -> list[Path]:
        from pipeline.ingest.ray_engine import parts_with_ray

        return parts_with_ray(ctx.config.ray, trained, ctx.store, ctx.located, ctx.keys, center, part_rows, folder)


ENGINES: dict[str, Callable[[], Engine]] = {"local": LocalEngine, "ray": RayEngine}
