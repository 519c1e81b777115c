"""How a record's title and body become the one text the encoder sees (the same at build, eval and sweep)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


def full_text(title: str | None, text: str) -> str:
    """Title as its own sentence before the body, so segmentation gives it a block of its own."""
    title = (title or "").strip()
    if not title:
        return text
    end = "" if title[-1] in ".?!:;" else "."
    return f"{title}{end} {text}"


def full_texts(dataset: datasets.Dataset) -> list[str]:
    """full_text of every row of a loaded dataset, its columns read whole (a datasets Column is iterated row by
    row, 40x slower at 100,000 rows)."""
    columns = dataset.select_columns(["title", "text"]).to_dict()
    return [full_text(title, text) for title, text in zip(columns["title"], columns["text"])]
