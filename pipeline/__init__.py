"""Stages around the HTP encoder: load, encode to shards, index, query, evaluate; the `htp` command."""

from pipeline.config import Config

__all__ = ["Config", "Searcher", "build", "search"]


def __getattr__(name: str) -> object:
    """build, Searcher and search are imported on first use, so `htp --help` and `htp info` load no torch."""
    if name == "build":
        from pipeline.ingest.builder import build

        return build
    if name in ("Searcher", "search"):
        from pipeline.query import searcher

        return getattr(searcher, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
