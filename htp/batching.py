"""Batches by a token budget, longest first, so padding stays small and memory bounded."""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(
    lengths: Sequence[int], budget: int, max_batch_size: int, max_padding: float = 1.0
) -> list[list[int]]:
    """Indices grouped longest first so that rows x longest length <= budget (a longer-than-budget text rides alone).

    A text joins a batch only while it is at least (1 - max_padding) x the batch's longest, so padding is at
    most `max_padding` of every batch's computed positions; small sets then run as more, narrower batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        full = (len(current) + 1) * width > budget or len(current) >= max_batch_size
        if current and (full or lengths[index] < (1 - max_padding) * width):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
