"""Stages around the HTP encoder: load, encode to shards, index, query, evaluate; the `htp` command."""

from pipeline.build import build
from pipeline.config import Config
from pipeline.search import Searcher, search

__all__ = ["Config", "Searcher", "build", "search"]
