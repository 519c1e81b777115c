"""One search request (queries, k, mode, where), validated once where it enters (the CLI, the Python API, the
service) and passed down whole, so no layer below checks it again (LanceDB's query builder is the model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.config import SearchConfig, ServeConfig
from pipeline.errors import PipelineValueError
from pipeline.query.filters import checked_shape, parse_where
from pipeline.query.modes import search_mode


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask; None is no bound (the Python API). The service takes its serve.* limits."""

    max_queries: int | None = None
    max_query_chars: int | None = None
    max_request_chars: int | None = None
    max_k: int | None = None

    @classmethod
    def of(cls, serve: ServeConfig) -> RequestLimits:
        """The bounds `htp serve` puts on one request."""
        return cls(serve.max_batch_queries, serve.max_query_chars, serve.max_request_chars, serve.max_k)


@dataclass(frozen=True)
class SearchRequest:
    """A checked search: non-empty queries within the limits, a whole k >= 1, a known mode, and a `where` filter
    that is a JSON object (its fit to an index's metadata is checked when the index evaluates it)."""

    queries: tuple[str, ...]
    k: int
    mode: str
    where: dict | None = None

    @classmethod
    def build(
        cls,
        queries: str | Sequence[str],
        settings: SearchConfig,
        k: int | None = None,
        mode: str | None = None,
        where: dict | str | None = None,
        limits: RequestLimits | None = None,
    ) -> SearchRequest:
        """Fill k and mode from `settings` when not given, parse a `where` given as JSON text, refuse what does not
        fit with a PipelineValueError naming the problem."""
        limits = limits or RequestLimits()
        texts = (queries,) if isinstance(queries, str) else tuple(queries)
        _check_queries(texts, limits)
        k = settings.k if k is None else k
        if limits.max_k is not None and not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= limits.max_k):
            raise PipelineValueError(f"k must be between 1 and {limits.max_k}, got {k!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PipelineValueError(f"k must be a whole number >= 1, got {k!r}")
        mode = search_mode(mode or settings.mode).name
        where = parse_where(where) if isinstance(where, str) else None if where is None else checked_shape(where)
        return cls(texts, k, mode, where)


def _check_queries(queries: tuple[str, ...], limits: RequestLimits) -> None:
    """Refuse an empty request, a query that is no text or has no words, and what goes past the limits."""
    if not queries:
        raise PipelineValueError("no queries: give at least one")
    if limits.max_queries is not None and len(queries) > limits.max_queries:
        raise PipelineValueError(f"{len(queries)} queries in one request; at most {limits.max_queries}")
    for query in queries:
        if not isinstance(query, str):
            raise PipelineValueError(f"a query must be text, got {type(query).__name__}")
    total = sum(len(query) for query in queries)
    if limits.max_request_chars is not None and total > limits.max_request_chars:
        raise PipelineValueError(
            f"{total} query characters in one request; at most {limits.max_request_chars} "
            "(send fewer or shorter queries per request)"
        )
    for query in queries:
        if not query.strip():
            raise PipelineValueError("the query is empty: give some words to search for")
        if limits.max_query_chars is not None and len(query) > limits.max_query_chars:
            raise PipelineValueError(f"the query has {len(query)} characters; at most {limits.max_query_chars}")
