"""Weighted reciprocal rank fusion of ranked id lists (how hybrid search merges dense and BM25 rankings)."""

from __future__ import annotations


def rrf(rankings: list[list[str]], weights: list[float] | None, k: int = 60, *, top: int) -> list[tuple[str, float]]:
    """The `top` ids by the sum over rankings of weight / (k + rank), rank from 1; ties keep first-seen order."""
    # Written out rather than ranx.fuse(method="rrf"): ranx's rrf takes no weights and needs scored Run objects,
    # while search has plain ranked id lists for one query at a time.
    weights = [1.0] * len(rankings) if weights is None else weights
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, doc in enumerate(ranking, 1):
            fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])[:top]
