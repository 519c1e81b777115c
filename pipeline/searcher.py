"""`htp query`: encode queries with the index's own encoder, search dense / BM25 / hybrid, return ranked hits."""

from __future__ import annotations

from pathlib import Path

from htp import EncoderConfig, HTPEncoder
from htp.config import OPTIONAL_KEYS
from indexes.store import OpenIndex, open_index
from pipeline.calibrated import Calibration
from pipeline.config import Config, SearchConfig
from pipeline.errors import PipelineValueError
from pipeline.fusion import FusionChoice, fuse
from pipeline.hits import Hit, snippet
from pipeline.modes import MODES, SearchMode, search_mode
from pipeline.vectors import prepare


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
        """Loaded on first dense query, so BM25-only search needs no model."""
        if self._encoder is None:
            self._encoder = HTPEncoder(self._encoder_config)
        return self._encoder

    def dense(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Dense ranking: queries through the index's encoder, centering and calibration, then FAISS."""
        vectors = prepare(self.encoder.encode(queries, kind="query"), self.index.center)
        if self.calibration is not None:
            vectors = self.calibration.queries(vectors)
        return self.index.search(vectors, k, nprobe=self.settings.nprobe, ef_search=self.settings.ef_search)

    def lexical(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """BM25 ranking over the index's own BM25 part."""
        return self.index.search_bm25(queries, k)

    def hybrid(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Dense and BM25 candidates fused with `self.fusion`."""
        depth = max(k, self.settings.candidates)
        dense, lexical = self.dense(queries, depth), self.lexical(queries, depth)
        return [
            fuse(d, b, self.fusion, k, self.settings.rrf_k, self.settings.bm25_weight) for d, b in zip(dense, lexical)
        ]

    def rankings(self, queries: list[str], k: int, mode: str | None = None) -> list[list[tuple[str, float]]]:
        """(id, score) lists per query in a mode of pipeline.modes (default: search.mode)."""
        return getattr(self, search_mode(mode or self.settings.mode).ranker)(queries, k)

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

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        """Ranked hits with title and snippet for one query."""
        if not query.strip():
            raise PipelineValueError("the query is empty: give some words to search for")
        k = self.settings.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PipelineValueError(f"k must be a whole number >= 1, got {k!r}")
        if mode is not None:
            search_mode(mode)
        return self.hits(self.rankings([query], k, mode))[0]

    def hits(self, rankings: list[list[tuple[str, float]]]) -> list[list[Hit]]:
        """Rankings -> hits with title and snippet, every ranking's documents read in one call."""
        docs = {doc["id"]: doc for doc in self.index.documents(sorted({i for ranked in rankings for i, _ in ranked}))}
        return [
            [
                Hit(rank, i, float(score), docs[i]["title"], snippet(docs[i]["text"]))
                for rank, (i, score) in enumerate(ranked, 1)
            ]
            for ranked in rankings
        ]


def search(
    index_dir: Path, query: str, k: int | None = None, mode: str | None = None, config: Config | None = None
) -> list[Hit]:
    """One-shot Python API: open, search, return hits."""
    return Searcher(index_dir, config).search(query, k, mode)
