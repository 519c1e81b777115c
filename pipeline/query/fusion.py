"""How hybrid search merges the dense and BM25 rankings: weighted reciprocal rank fusion, or a convex
combination of min-max normalised scores; calibration chooses between them per index."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pipeline.errors import PipelineValueError

FUSION_METHODS = ("rrf", "score")

Id = TypeVar("Id", bound=Hashable)  # document ids or row numbers: what goes in comes out


@dataclass(frozen=True)
class FusionChoice:
    """`rrf`: dense_weight / (k + rank) + bm25_weight / (k + rank); `score`: dense_weight * dense + (1 - dense_weight)
    * bm25, each min-max normalised over its own candidates. A dense weight of 0 is BM25 alone."""

    method: str
    dense_weight: float

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise PipelineValueError(f"fusion {self.method!r} is not one of {', '.join(FUSION_METHODS)}")
        if self.dense_weight < 0 or (self.method == "score" and self.dense_weight > 1):
            raise PipelineValueError(
                f"dense weight {self.dense_weight} is outside {'[0, 1]' if self.method == 'score' else '[0, inf)'}"
            )

    @property
    def label(self) -> str:
        return f"{self.method}_{self.dense_weight:g}"


def rrf(rankings: list[list[Id]], weights: list[float] | None, k: int = 60, *, top: int) -> list[tuple[Id, float]]:
    """The `top` ids by the sum over rankings of weight / (k + rank), rank from 1; ties keep first-seen order."""
    # Written out rather than ranx.fuse(method="rrf"): ranx's rrf takes no weights and needs scored Run objects,
    # while search has plain ranked id lists for one query at a time.
    weights = [1.0] * len(rankings) if weights is None else weights
    if len(weights) != len(rankings):
        raise PipelineValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    fused: dict[Id, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, doc in enumerate(ranking, 1):
            fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])[:top]


def _min_max(ranked: Sequence[tuple[Id, float]]) -> dict[Id, float]:
    if not ranked:
        return {}
    scores = [s for _, s in ranked]
    low, span = min(scores), max(scores) - min(scores)
    return {doc: (s - low) / span if span > 0 else 1.0 for doc, s in ranked}


def score_fusion(
    dense: Sequence[tuple[Id, float]], lexical: Sequence[tuple[Id, float]], dense_weight: float, *, top: int
) -> list[tuple[Id, float]]:
    """Convex combination of min-max normalised scores; a document missing from one list scores 0 there."""
    # Per query and over a few hundred candidates; ranx.fuse works on whole Run objects of many queries.
    d, b = _min_max(dense), _min_max(lexical)
    fused = {doc: dense_weight * d.get(doc, 0.0) + (1 - dense_weight) * b.get(doc, 0.0) for doc in [*b, *d]}
    return sorted(fused.items(), key=lambda item: -item[1])[:top]


def fuse(
    dense: Sequence[tuple[Id, float]],
    lexical: Sequence[tuple[Id, float]],
    choice: FusionChoice,
    top: int,
    rrf_k: int = 60,
    bm25_weight: float = 1.0,
) -> list[tuple[Id, float]]:
    """One query's hybrid ranking from its dense and BM25 (id, score) lists."""
    if choice.method == "rrf":
        return rrf(
            [[i for i, _ in dense], [i for i, _ in lexical]], [choice.dense_weight, bm25_weight], k=rrf_k, top=top
        )
    return score_fusion(dense, lexical, choice.dense_weight, top=top)
