"""One way to time: variants run in alternating rounds (so drift on a shared machine hits each alike), reduced
to medians, percentiles and the per-round ratios of one variant to another (absolute times on shared machines
are noisy; ratios taken side by side in one run are not)."""

from __future__ import annotations

import time
from collections.abc import Callable


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of the sorted values lie (nearest rank: no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def alternating(runs: dict[str, Callable[[], object]], rounds: int, warm_up: int = 1) -> dict[str, list[float]]:
    """Seconds of each run in each of `rounds` rounds, every run taking its turn per round, after `warm_up`
    untimed rounds."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(warm_up + rounds):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            if round_ >= warm_up:
                seconds[name].append(time.perf_counter() - began)
    return seconds


def paired_ratios(base: list[float], other: list[float]) -> list[float]:
    """other / base, round by round: the figures a side-by-side comparison quotes (their median and range)."""
    return [b / a for a, b in zip(base, other)]
