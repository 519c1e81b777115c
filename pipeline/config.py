"""The whole configuration (config.yaml) as dataclasses; unknown keys are errors that name the key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from htp import EncoderConfig
from htp.config import checked_fields
from indexes.params import DEFAULT_EF_SEARCH, DEFAULT_NPROBE
from pipeline.errors import InputMissingError, PipelineValueError
from pipeline.query.fusion import FUSION_METHODS
from pipeline.query.modes import SEARCH_MODES

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class DataConfig:
    """Field names of the input records."""

    id_field: str = "_id"
    title_field: str | None = "title"
    text_field: str = "text"
    metadata_fields: tuple[str, ...] | str = ()  # fields kept beside the text for filters and hits, or "all"

    def __post_init__(self) -> None:
        fields = self.metadata_fields
        if isinstance(fields, list):
            object.__setattr__(self, "metadata_fields", tuple(fields))
        elif fields != "all" and not isinstance(fields, tuple):
            raise PipelineValueError(f"data.metadata_fields must be a list of field names or all, got {fields!r}")


@dataclass(frozen=True)
class IndexConfig:
    """How the FAISS (and BM25) index is built."""

    factory: str = "auto"
    memory_budget_mb: int = 4096
    shard_size: int = 512
    train_sample: int = 100_000
    center: bool = True
    bm25: bool = True
    calibrate: bool = True
    window_tokens: int | None = None
    page_vector: bool = False  # with window_tokens: each document's own vector too, windows only where it is truncated
    on_disk: bool | str = "auto"  # true, false, or auto: on disk when the raw vectors exceed memory_budget_mb

    def __post_init__(self) -> None:
        if self.on_disk not in (True, False, "auto"):
            raise PipelineValueError(f"index.on_disk must be true, false or auto, got {self.on_disk!r}")
        if self.shard_size < 1 or self.memory_budget_mb < 1 or self.train_sample < 1:
            raise PipelineValueError("index.shard_size, index.memory_budget_mb and index.train_sample must be >= 1")
        if self.window_tokens is not None and self.window_tokens < 8:
            raise PipelineValueError(f"index.window_tokens must be null or >= 8, got {self.window_tokens}")
        if self.page_vector and self.window_tokens is None:
            raise PipelineValueError("index.page_vector needs index.window_tokens: the size of the windows it adds")


@dataclass(frozen=True)
class CalibrationConfig:
    """Self-calibration at build time (index.calibrate): how many pseudo-queries to draw from the corpus."""

    pseudo_queries: int = 2000
    dev_queries: int = 200
    max_documents: int = 50_000
    seed: int = 0
    stale_share: float = 0.2  # after live changes to more than this share of the documents, calibration is stale

    def __post_init__(self) -> None:
        if min(self.pseudo_queries, self.dev_queries, self.max_documents) < 1:
            raise PipelineValueError("calibration.pseudo_queries, dev_queries and max_documents must be >= 1")
        if not 0 < self.stale_share <= 1:
            raise PipelineValueError(f"calibration.stale_share must be in (0, 1], got {self.stale_share}")


@dataclass(frozen=True)
class SearchConfig:
    """How queries are answered: dense, BM25 or both fused by reciprocal rank."""

    mode: str = "hybrid"
    k: int = 10
    fusion: str = "auto"
    rrf_k: int = 60
    dense_weight: float = 0.25
    bm25_weight: float = 1.0
    candidates: int = 100
    nprobe: int = DEFAULT_NPROBE
    ef_search: int = DEFAULT_EF_SEARCH

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise PipelineValueError(f"search.mode {self.mode!r} is not one of {', '.join(SEARCH_MODES)}")
        if self.k < 1 or self.candidates < 1:
            raise PipelineValueError("search.k and search.candidates must be >= 1")
        if self.rrf_k < 1 or self.nprobe < 1 or self.ef_search < 1:
            raise PipelineValueError("search.rrf_k, search.nprobe and search.ef_search must be >= 1")
        if self.dense_weight < 0 or self.bm25_weight < 0:
            raise PipelineValueError("search.dense_weight and search.bm25_weight must be >= 0")
        if self.fusion not in ("auto", *FUSION_METHODS):
            raise PipelineValueError(f"search.fusion {self.fusion!r} is not one of auto, {', '.join(FUSION_METHODS)}")


@dataclass(frozen=True)
class ServeConfig:
    """`htp serve`: what one request may ask, and how concurrent queries are batched."""

    max_query_chars: int = 2000
    max_k: int = 100
    max_batch_queries: int = 64
    max_request_chars: int = 8000  # all queries of one request together: bounds the encoding work a request causes
    max_write_documents: int = 256  # documents in one POST /documents: bounds the encoding work one write causes
    max_body_bytes: int = 1_000_000
    max_body_seconds: float = 10.0  # a body still arriving after this gets a 408: slow senders cannot hold memory
    max_buffered_bytes: int = 64_000_000  # request bodies held at once, all requests together; past it a 503
    max_concurrency: int = 64
    batch_wait_ms: float = 5.0  # waited only when other queries are likely to follow (serve.MicroBatcher)
    batch_size: int = 32
    access_log: bool = False  # one JSON line per request on the htp.access logger (stderr)
    warm_up: bool = True  # load the encoder in the background at start: the first dense request need not wait
    allow_writes_without_key: bool = False  # POST/DELETE /documents on a service started without --api-key

    def __post_init__(self) -> None:
        if (
            min(
                self.max_query_chars,
                self.max_k,
                self.max_batch_queries,
                self.max_request_chars,
                self.max_write_documents,
                self.max_body_bytes,
                self.max_buffered_bytes,
                self.max_concurrency,
                self.batch_size,
            )
            < 1
            or self.batch_wait_ms < 0
            or not self.max_body_seconds > 0
        ):
            raise PipelineValueError(
                "serve limits and batch_size must be >= 1, batch_wait_ms >= 0, max_body_seconds > 0"
            )


@dataclass(frozen=True)
class RayConfig:
    """`engine: ray`: which Ray cluster encodes, and how many encoder actors it runs with what resources."""

    address: str | None = None  # None: start a local Ray instance; "auto" or "ray://head:10001": join a cluster
    actors: int | None = None  # None: one per GPU of the cluster, else one
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float = 1.0
    batch_size: int | None = None  # documents per actor call (one shard each); None: index.shard_size

    def __post_init__(self) -> None:
        if (self.actors is not None and self.actors < 1) or (self.batch_size is not None and self.batch_size < 1):
            raise PipelineValueError("ray.actors and ray.batch_size must be null or >= 1")
        if self.cpus_per_actor <= 0 or (self.gpus_per_actor is not None and self.gpus_per_actor < 0):
            raise PipelineValueError("ray.cpus_per_actor must be > 0 and ray.gpus_per_actor null or >= 0")


@dataclass(frozen=True)
class PathsConfig:
    """Default input and output locations, relative to the working directory."""

    input: str = "data/sample/corpus.jsonl"
    index_dir: str = "out/sample-index"


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error instead of silently the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class Config:
    """config.yaml: encoder, data fields, index, calibration, search, serve, build engine, paths."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    engine: str = "local"  # local: this process encodes; ray: a Ray Data job does (see the ray section)
    ray: RayConfig = field(default_factory=RayConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise PipelineValueError(f"engine {self.engine!r} is not one of {', '.join(ENGINES)}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Config:
        """Build from a parsed YAML mapping, refusing unknown sections and keys by name."""
        raw = dict(raw or {})
        scalars = {f.name: f for f in fields(cls) if f.default_factory is MISSING}
        sections: dict[str, Callable[[], Any]] = {
            f.name: f.default_factory  # type: ignore[misc]  # dataclasses types it as a union with MISSING
            for f in fields(cls)
            if f.name not in scalars
        }
        unknown = sorted(set(raw) - set(sections) - set(scalars))
        if unknown:
            raise PipelineValueError(
                f"unknown config sections: {', '.join(unknown)} (known: {', '.join([*sections, *scalars])})"
            )
        built = checked_fields(
            cls, {name: raw.pop(name) for name in scalars if name in raw}, "config", PipelineValueError
        )
        for name, factory in sections.items():
            section = raw.get(name) or {}
            if not isinstance(section, dict):
                raise PipelineValueError(f"config section {name!r} must be a mapping")
            kind = type(factory())
            if kind is EncoderConfig:
                built[name] = EncoderConfig.from_dict(section)
                continue
            built[name] = kind(**checked_fields(kind, section, name, PipelineValueError))
        return cls(**built)

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Read a YAML file; `None` gives the built-in defaults."""
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise InputMissingError(f"no configuration file {path}")
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except yaml.YAMLError as err:
            raise PipelineValueError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from err
        except UnicodeDecodeError as err:
            raise PipelineValueError(f"{path} is not UTF-8 text") from err
        if raw is not None and not isinstance(raw, dict):
            raise PipelineValueError(
                f"{path} must be a mapping of sections (encoder:, index:, ...), not a {type(raw).__name__}"
            )
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping, as config.yaml spells it (the encoder section as EncoderConfig.to_dict gives it)."""
        out = asdict(self)
        out["encoder"] = self.encoder.to_dict()
        if isinstance(self.data.metadata_fields, tuple):  # as YAML writes it: a list
            out["data"]["metadata_fields"] = list(self.data.metadata_fields)
        return out


def config_hash(data: dict[str, Any]) -> str:
    """Short stable hash of a mapping, used to key shards and to check a query encoder against its index."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
