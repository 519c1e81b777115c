"""`engine: ray`: the encode stage as a Ray Data job. Ray Data reads the input itself where it can, drops the
documents whose vectors are stored already, and encoder actors (each loading the model once) write one keyed
shard per batch into the build's shard folder, which every Ray node must see (a shared filesystem on a cluster).
Ray restarts a killed actor and retries its batch; a shard is named by its documents, so a retry rewrites the
same file. An on-disk IVF index's parts are written by Ray tasks. Ray is imported only here, so local builds
never need it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import torch

from htp import EncoderConfig, HTPEncoder
from indexes.ondisk import PARTS, write_part
from pipeline.config import Config, RayConfig
from pipeline.errors import PipelineValueError
from pipeline.ingest.encoding import encode_into
from pipeline.ingest.load import BEIR_CORPUS, FieldNames, LoadResult, normaliser, resolve_input
from pipeline.ingest.shards import Located, ShardStore, document_keys
from pipeline.vectors import prepare

log = logging.getLogger(__name__)
# Reading and keying reserve no CPU: they are light next to encoding, and encoder actors that reserve every CPU
# (one actor with all of a machine's cores) would otherwise leave them no budget and the job would never start.
READ_CPUS = 0


class ShardEncoder:
    """A Ray Data actor: loads the encoder once, then encodes each batch of not-yet-stored documents into one
    shard."""

    def __init__(
        self,
        encoder: dict[str, Any],
        folder: str,
        config_hash: str,
        window_tokens: int | None,
        page_vector: bool,
        stored: Any,
        threads: int,
    ) -> None:
        import ray

        torch.set_num_threads(threads)
        self.stored = ray.get(stored) if isinstance(stored, ray.ObjectRef) else stored
        self.encoder = HTPEncoder(EncoderConfig.from_dict(encoder))
        self.store = ShardStore(Path(folder), config_hash)
        self.window_tokens, self.page_vector = window_tokens, page_vector

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        columns = batch.to_pydict()
        keys = np.asarray(columns["key"], dtype=self.stored.dtype)
        new = np.flatnonzero(~np.isin(keys, self.stored))
        truncated = 0
        if len(new):
            pick = [int(i) for i in new]
            truncated = encode_into(
                self.store,
                self.encoder,
                [columns["id"][i] for i in pick],
                [columns["title"][i] for i in pick],
                [columns["text"][i] for i in pick],
                [columns["key"][i] for i in pick],
                self.window_tokens,
                self.page_vector,
            )
        return {"encoded": np.array([len(new)]), "truncated": np.array([truncated])}


def _keyed(fields: FieldNames, file: Path):
    """A Ray Data batch function: records to id/title/text strings (as `htp build` loads them), empty texts
    dropped, with each document's key."""
    normalise = normaliser(replace(fields, metadata=()), file)  # the workers encode; metadata stays with the build

    def keyed(batch: pa.Table) -> pa.Table:
        rows = normalise(batch.to_pydict(), list(range(batch.num_rows)))
        rows["key"] = document_keys(rows["id"], rows["title"], rows["text"])
        return pa.table({name: pa.array(values, pa.string()) for name, values in rows.items()})

    return keyed


def _source(input_path: Path, fields: FieldNames, loaded: LoadResult):
    """The input as a Ray Dataset: JSON lines, Parquet, CSV and BEIR folders read by Ray Data on the workers;
    other inputs (Arrow files, save_to_disk folders, JSON arrays) from the driver's loaded copy."""
    import pyarrow.csv as pcsv
    import ray.data

    file, fields, _ = resolve_input(input_path, fields)
    suffix = file.suffix.lower()
    if file.is_file() and (suffix == ".jsonl" or (suffix == ".json" and _is_json_lines(file))):
        raw = ray.data.read_json(
            str(file), num_cpus=READ_CPUS
        )  # pyarrow's reader, for JSON lines: missing fields are null
    elif file.is_file() and suffix == ".parquet":
        raw = ray.data.read_parquet(str(file), num_cpus=READ_CPUS)
    elif file.is_file() and suffix == ".csv":
        names = [n for n in (fields.id_field, fields.title_field, fields.text_field) if n]
        raw = ray.data.read_csv(
            str(file),
            num_cpus=READ_CPUS,
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    else:
        log.info(
            f"ray: {file.name} is handed to Ray from this process (Ray Data reads JSON lines, Parquet, CSV and "
            f"BEIR folders ({BEIR_CORPUS}) itself)"
        )
        return ray.data.from_arrow(loaded.dataset.data.table.select(["id", "title", "text"])).map_batches(
            lambda batch: batch.append_column(
                "key",
                pa.array(document_keys(*(batch.column(c).to_pylist() for c in ("id", "title", "text"))), pa.string()),
            ),
            batch_format="pyarrow",
            num_cpus=READ_CPUS,
        )
    return raw.map_batches(_keyed(fields, file), batch_format="pyarrow", num_cpus=READ_CPUS)


def _is_json_lines(file: Path) -> bool:
    """A .json file holding one object per line rather than one array."""
    with file.open("rb") as f:
        return f.read(4096).lstrip()[:1] == b"{"


def actor_resources(settings: RayConfig, cluster_gpus: float) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU when the cluster has GPUs, else one CPU actor, unless set."""
    gpus = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    actors = settings.actors or (max(1, int(cluster_gpus // gpus)) if gpus else 1)
    return actors, gpus


@contextmanager
def connected(settings: RayConfig) -> Iterator[Any]:
    """The ray module, connected: to settings.address, or a new local instance (shut down afterwards) when this
    process is not connected yet."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray.data is used through the ray module)
    except ImportError as err:
        raise PipelineValueError("engine: ray needs Ray: pip install 'htp-index[ray]' (or set engine: local)") from err
    started = not ray.is_initialized()
    if started:
        ray.init(address=settings.address, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def encode_with_ray(
    input_path: Path, loaded: LoadResult, fields: FieldNames, config: Config, store: ShardStore, stored: set[str]
) -> tuple[int, int]:
    """Encode every input document whose key is not in `stored` on a Ray cluster; returns (encoded, truncated)."""
    with connected(config.ray) as ray:
        actors, gpus = actor_resources(config.ray, ray.cluster_resources().get("GPU", 0.0))
        log.info(f"ray: {actors} encoder actor(s), {gpus:g} GPU and {config.ray.cpus_per_actor:g} CPU each")
        known = ray.put(np.array(sorted(stored), dtype="S32"))
        results = (
            _source(Path(input_path), fields, loaded)
            .map_batches(
                ShardEncoder,
                batch_format="pyarrow",
                batch_size=config.ray.batch_size or config.index.shard_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus,
                num_cpus=config.ray.cpus_per_actor,
                fn_constructor_kwargs={
                    "encoder": config.encoder.to_dict(),
                    "folder": str(store.folder),
                    "config_hash": store.config_hash,
                    "window_tokens": config.index.window_tokens,
                    "page_vector": config.index.page_vector,
                    "stored": known,
                    "threads": max(1, int(config.ray.cpus_per_actor)),
                },
            )
            .take_all()
        )
    return sum(int(r["encoded"]) for r in results), sum(int(r["truncated"]) for r in results)


def _write_part(
    trained: bytes,
    folder: str,
    config_hash: str,
    located: Located,
    keys: list[str],
    center: np.ndarray | None,
    first_row: int,
    path: str,
) -> str:
    """A Ray task: one on-disk IVF part from its documents' stored vectors."""
    stored = ShardStore(Path(folder), config_hash).gather(keys, located)
    vectors = np.concatenate([prepare(v, center) for _, v in stored])
    return str(
        write_part(faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8)), vectors, first_row, Path(path))
    )


def parts_with_ray(
    settings: RayConfig,
    trained: faiss.Index,
    store: ShardStore,
    located: Located,
    keys: list[str],
    center: np.ndarray | None,
    part_docs: int,
    folder: Path,
) -> list[Path]:
    """The on-disk IVF index's parts written by Ray tasks (one per `part_docs` documents, in input order), each
    reading its documents' vectors from the shards; returns the part files for merge_parts."""
    (folder / PARTS).mkdir(parents=True, exist_ok=True)
    with connected(settings) as ray:
        task = ray.remote(num_cpus=1)(_write_part)
        trained_ref = ray.put(faiss.serialize_index(trained).tobytes())
        refs, first_row = [], 0
        for number, start in enumerate(range(0, len(keys), part_docs)):
            chunk = keys[start : start + part_docs]
            part_located = {k: located[k] for k in chunk}
            refs.append(
                task.remote(
                    trained_ref,
                    str(store.folder),
                    store.config_hash,
                    part_located,
                    chunk,
                    center,
                    first_row,
                    str(folder / PARTS / f"part-{number:05d}.index"),
                )
            )
            first_row += sum(located[k][2] for k in chunk)
        return [Path(p) for p in ray.get(refs)]
