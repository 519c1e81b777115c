"""Token-budget batching: every text once, budget and padding cap kept, longest first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from htp.batching import token_budget_batches


@given(
    st.lists(st.integers(1, 600), min_size=1, max_size=200),
    st.integers(1, 4096),
    st.integers(1, 64),
    st.sampled_from([0.0, 0.05, 0.2, 1.0]),
)
def test_batches_cover_every_text_within_budget_and_padding(lengths, budget, max_rows, max_padding):
    batches = token_budget_batches(lengths, budget, max_rows, max_padding)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert lengths[batch[0]] == width
        assert len(batch) == 1 or (len(batch) * width <= budget and len(batch) <= max_rows)
        padding = len(batch) * width - sum(lengths[i] for i in batch)
        assert padding <= max_padding * len(batch) * width + 1e-9


def test_padding_cap_splits_mixed_lengths_and_no_cap_keeps_them_together():
    lengths = [100, 98, 60, 59, 10]
    assert token_budget_batches(lengths, 10_000, 64, 0.05) == [[0, 1], [2, 3], [4]]
    assert token_budget_batches(lengths, 10_000, 64, 1.0) == [[0, 1, 2, 3, 4]]
