"""How a record's title and body become the one text the encoder sees (the same at build, eval and sweep)."""

from __future__ import annotations


def full_text(title: str | None, text: str) -> str:
    """Title as its own sentence before the body, so segmentation gives it a block of its own."""
    title = (title or "").strip()
    if not title:
        return text
    end = "" if title[-1] in ".?!:;" else "."
    return f"{title}{end} {text}"
