"""Token layouts built from token ids: BOS, prompt, placeholders, blocks; truncation; what is pooled and copied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from htp.config import Method
from htp.errors import EncoderValueError

PLACEHOLDER = -1  # stands for a <PST>/<B-PST> position in `ids`; its embedding is set by the encoder, never looked up


@dataclass
class Layout:
    """One sequence: token ids (PLACEHOLDER at placeholder positions) and the positions each step needs;
    `head` counts the leading BOS and prompt tokens, the same for every text of a kind."""

    ids: list[int]
    pooled: list[int]
    last: int
    pst: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    bpst: list[int] = field(default_factory=list)
    truncated: bool = False
    head: int = 1

    @property
    def placeholders(self) -> list[int]:
        """Every placeholder position (global ones first)."""
        return self.bpst + self.pst


def _clip_blocks(
    blocks: Sequence[tuple[int, int]], budget: int, cost_per_block: int
) -> tuple[list[tuple[int, int]], bool]:
    """Keep whole blocks while they fit, then cut the first one that does not; M counts survivors only."""
    kept: list[tuple[int, int]] = []
    used = 0
    for start, stop in blocks:
        size = stop - start
        if used + cost_per_block + size <= budget:
            kept.append((start, stop))
            used += cost_per_block + size
            continue
        room = budget - used - cost_per_block
        if room > 0:
            kept.append((start, start + room))
        return kept, True
    return kept, False


def build_layout(
    method: Method,
    text_ids: Sequence[int],
    blocks: Sequence[tuple[int, int]],
    bos_id: int,
    prompt_ids: Sequence[int],
    max_length: int,
    eos_id: int | None = None,
) -> Layout:
    """Lay out one text for a method; `blocks` are [start, stop) ranges over `text_ids` covering it in order.

    With `eos_id` (fine-tuned embedders such as e5-mistral read their vector at an appended EOS) the EOS closes
    the sequence after any truncation, is pooled with the text, and is the `last` position."""
    if not text_ids:
        raise EncoderValueError("cannot lay out an empty text")
    head = [bos_id, *prompt_ids]
    tail = [] if eos_id is None else [eos_id]
    budget = max_length - len(head) - len(tail)
    if budget < 3:
        raise EncoderValueError(
            f"max_length {max_length} leaves no room for text after BOS and a {len(prompt_ids)}-token prompt"
        )
    if method.layout == "plain":
        body = list(text_ids[:budget])
        ids = head + body + tail
        return Layout(
            ids=ids,
            pooled=list(range(len(head), len(ids))),
            last=len(ids) - 1,
            truncated=len(body) < len(text_ids),
            head=len(head),
        )
    if method.layout == "echo":
        half = budget // 2
        body = list(text_ids[:half])
        ids = head + body + body + tail
        second = len(head) + len(body)
        return Layout(
            ids=ids,
            pooled=list(range(second, len(ids))),
            last=len(ids) - 1,
            truncated=len(body) < len(text_ids),
            head=len(head),
        )
    if method.blocks == "whole":  # TP: one <PST> before the whole text, no global summaries
        kept, truncated = _clip_blocks([(0, len(text_ids))], budget, cost_per_block=1)
        globals_count = 0
    else:  # HTP: a <PST> before every block and a <B-PST> per block after the prompt
        kept, truncated = _clip_blocks(blocks, budget, cost_per_block=2)
        globals_count = len(kept)
    ids = head + [PLACEHOLDER] * globals_count
    bpst = list(range(len(head), len(ids)))
    pst: list[int] = []
    ends: list[int] = []
    pooled: list[int] = []
    for start, stop in kept:
        pst.append(len(ids))
        ids.append(PLACEHOLDER)
        pooled.extend(range(len(ids), len(ids) + stop - start))
        ids.extend(text_ids[start:stop])
        ends.append(len(ids) - 1)
    if tail:
        pooled.append(len(ids))
        ids.extend(tail)
    return Layout(
        ids=ids, pooled=pooled, last=len(ids) - 1, pst=pst, ends=ends, bpst=bpst, truncated=truncated, head=len(head)
    )
