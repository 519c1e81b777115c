"""`htp query`: encode queries with the index's own encoder, search dense / BM25 / hybrid, return ranked hits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from htp import EncoderConfig
from htp.config import OPTIONAL_KEYS
from indexes.store import Hits as Rankings
from indexes.store import OpenIndex, open_index
from pipeline.config import Config, SearchConfig
from pipeline.errors import PipelineValueError
from pipeline.query import filters
from pipeline.query.calibrated import Calibration
from pipeline.query.fusion import FusionChoice, fuse
from pipeline.query.hits import Hit, snippet
from pipeline.query.modes import MODES, SearchMode, search_mode
from pipeline.query.request import RequestLimits, SearchRequest
from pipeline.vectors import prepare

if TYPE_CHECKING:
    from htp import HTPEncoder


class EncoderMismatchError(PipelineValueError):
    """The configuration asked for an encoder other than the one the index was built with."""


def check_encoder(config: Config, index: OpenIndex) -> None:
    """Refuse a configuration whose vector settings differ from the index's, naming each difference."""
    wanted, built = config.encoder.vector_settings(), index.manifest.encoder
    diffs = [
        f"{key}: index has {built.get(key)!r}, config has {wanted.get(key)!r}"
        for key in sorted(set(wanted) | set(built))
        if wanted.get(key) != built.get(key)
    ]
    if diffs:
        raise EncoderMismatchError(
            f"the index at {index.path} was built with another encoder; its vectors cannot be compared with these "
            "queries. Rebuild the index with this config, or query without --config to use the index's own "
            "encoder. Differences: " + "; ".join(diffs)
        )


class Searcher:
    """A read-only view of an index plus the encoder its manifest names."""

    def __init__(self, index_dir: Path, config: Config | None = None, encoder: HTPEncoder | None = None) -> None:
        self.index_dir, self._config = Path(index_dir), config
        self.index = open_index(self.index_dir)
        if config is not None:
            check_encoder(config, self.index)
        self.settings: SearchConfig = config.search if config else SearchConfig()
        runtime = {} if config is None else config.encoder.runtime()
        self._encoder = encoder
        self._loading = threading.Lock()
        # A vector setting missing from a manifest had the value at which vector_settings leaves it out (older
        # indexes predate the key): take that value, not today's default.
        self._encoder_config = EncoderConfig.from_dict({**OPTIONAL_KEYS, **self.index.manifest.encoder, **runtime})
        manifest = self.index.manifest
        self.calibration = (
            Calibration.load(manifest.calibration, self.index.calibration_arrays) if manifest.calibration else None
        )
        self.fusion = self._fusion()

    def _fusion(self) -> FusionChoice:
        """`auto` takes the fusion the index's calibration chose, else weighted RRF with search.dense_weight."""
        if self.settings.fusion == "auto":
            if self.calibration is not None:
                return self.calibration.fusion
            return FusionChoice("rrf", self.settings.dense_weight)
        return FusionChoice(self.settings.fusion, self.settings.dense_weight)

    @property
    def encoder(self) -> HTPEncoder:
        """Loaded on first dense query, so BM25-only search needs no model; once, however many threads ask."""
        with self._loading:
            if self._encoder is None:
                from htp.encoder import HTPEncoder  # here: BM25-only search and opening an index import no torch

                self._encoder = HTPEncoder(self._encoder_config)
        return self._encoder

    def dense(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> Rankings:
        """Dense ranking: queries through the index's encoder, centering and calibration, then FAISS (among the
        `allowed` documents when given)."""
        vectors = prepare(self.encoder.encode(queries, kind="query"), self.index.center)
        if self.calibration is not None:
            vectors = self.calibration.queries(vectors)
        return self.index.search(vectors, k, self.settings.nprobe, self.settings.ef_search, allowed)

    @property
    def encoder_loaded(self) -> bool:
        """Whether the encoder is loaded (a dense query would not wait for it)."""
        return self._encoder is not None

    def encoder_seconds(self) -> float:
        """Forward-pass seconds this searcher's encoder has spent so far (0 before it is loaded)."""
        return self._encoder.stats.seconds if self._encoder is not None else 0.0

    def lexical(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> Rankings:
        """BM25 ranking over the index's own BM25 part."""
        return self.index.search_bm25(queries, k, allowed)

    def hybrid(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> Rankings:
        """Dense and BM25 candidates, each filtered the same way, fused with `self.fusion`."""
        depth = max(k, self.settings.candidates)
        dense, lexical = self.dense(queries, depth, allowed), self.lexical(queries, depth, allowed)
        return [
            fuse(d, b, self.fusion, k, self.settings.rrf_k, self.settings.bm25_weight) for d, b in zip(dense, lexical)
        ]

    def allowed(self, where: dict | None) -> np.ndarray | None:
        """The documents a `where` filter allows (pipeline.query.filters), or None for no filter."""
        if where is None:
            return None
        return filters.allowed(where, self.index.metadata, self.index.manifest.metadata)

    def request(
        self,
        queries: str | list[str],
        k: int | None = None,
        mode: str | None = None,
        where: dict | str | None = None,
        limits: RequestLimits | None = None,
    ) -> SearchRequest:
        """A request checked once, k and mode defaulting to this searcher's search settings."""
        return SearchRequest.build(queries, self.settings, k, mode, where, limits)

    def ranked(self, request: SearchRequest, allowed: np.ndarray | None) -> Rankings:
        """(id, score) lists per query of a checked request, among the `allowed` documents (`self.allowed` of its
        filter, evaluated once by the caller); filtering happens inside each ranker, before ranking, so k hits come
        back whenever k documents match."""
        ranker = getattr(self, search_mode(request.mode).ranker)
        return ranker(list(request.queries), request.k, allowed)

    def rankings(self, queries: list[str], k: int, mode: str | None = None, where: dict | None = None) -> Rankings:
        """(id, score) lists per query in a mode of pipeline.query.modes (default: search.mode), among the documents
        `where` allows."""
        request = self.request(queries, k, mode, where)
        return self.ranked(request, self.allowed(request.where))

    def modes(self) -> list[SearchMode]:
        """The modes this index can answer (those needing BM25 only when it has the part)."""
        return [mode for mode in MODES.values() if self.index.bm25 is not None or not mode.needs_bm25]

    def reopened(self) -> Searcher:
        """A searcher over the version CURRENT names now, keeping this one's loaded model when the new version's
        encoder settings are the same (a service's hot swap)."""
        fresh = Searcher(self.index_dir, self._config)
        if fresh.index.manifest.encoder == self.index.manifest.encoder:
            fresh._encoder = self._encoder
        return fresh

    def search(self, query: str, k: int | None = None, mode: str | None = None, where: dict | None = None) -> list[Hit]:
        """Ranked hits with title, snippet and metadata for one query, among the documents `where` allows."""
        return self.answer(self.request(query, k, mode, where))[0]

    def answer(self, request: SearchRequest) -> list[list[Hit]]:
        """Hits for every query of a checked request."""
        return self.hits(self.ranked(request, self.allowed(request.where)))

    def hits(self, rankings: Rankings) -> list[list[Hit]]:
        """Rankings -> hits with title, snippet and metadata, every ranking's documents read in one call."""
        wanted = sorted({i for ranked in rankings for i, _ in ranked})
        docs = {doc["id"]: doc for doc in self.index.documents(wanted)}
        metadata = dict(zip(wanted, self.index.metadata_of(wanted)))
        return [
            [
                Hit(rank, i, float(score), docs[i]["title"], snippet(docs[i]["text"]), metadata[i])
                for rank, (i, score) in enumerate(ranked, 1)
            ]
            for ranked in rankings
        ]


def search(
    index_dir: Path,
    query: str,
    k: int | None = None,
    mode: str | None = None,
    config: Config | None = None,
    where: dict | None = None,
) -> list[Hit]:
    """One-shot Python API: open, search, return hits (among the documents `where` allows, pipeline.query.filters)."""
    return Searcher(index_dir, config).search(query, k, mode, where)
