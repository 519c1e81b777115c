"""Where a benchmark's table goes: a Markdown file, the same figures as JSON beside it, and stdout."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path, lines: list[str], data: object) -> None:
    """Write `lines` to out (.md) and `data` to out with a .json suffix, then print the lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(lines))
