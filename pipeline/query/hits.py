"""What a search returns: ranked hits with a one-line snippet (light, so a client of `htp serve` needs no model)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Hit:
    """One ranked result."""

    rank: int
    id: str
    score: float
    title: str
    snippet: str
    metadata: dict = field(default_factory=dict)  # the document's metadata fields (data.metadata_fields)


def snippet(text: str, width: int = 160) -> str:
    """The first `width` characters on one line, cut at a word."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width].rsplit(" ", 1)[0] + " ..."
