"""Regenerate data/sample/corpus.jsonl: docstrings of Python's standard library (PSF License 2.0).

Run with the Python the sample was made with (3.11) for an identical file: `python data/make_sample.py`.
Each record is one module, class or function whose docstring is at least 200 characters long.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import re
import sys
import warnings
from pathlib import Path

SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "test", "pydoc_data"}
PER_MODULE = 3
MIN_CHARS = 200
LIMIT = 500


def docstring(obj: object) -> str:
    """The object's own docstring with whitespace folded, or ''."""
    return re.sub(r"\s+", " ", inspect.getdoc(obj) or "").strip()


def records() -> list[dict[str, str]]:
    """Module docstrings first, then up to PER_MODULE long public class/function docstrings per module."""
    warnings.filterwarnings("ignore")
    out: list[dict[str, str]] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                module = importlib.import_module(name)
        except BaseException:
            continue
        text = docstring(module)
        if len(text) >= MIN_CHARS:
            out.append({"_id": name, "title": f"{name} module", "text": text})
        members = [
            (attr, obj)
            for attr, obj in sorted(vars(module).items())
            if not attr.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == name
            and len(docstring(obj)) >= MIN_CHARS
        ]
        for attr, obj in members[:PER_MODULE]:
            out.append({"_id": f"{name}.{attr}", "title": f"{name}.{attr}", "text": docstring(obj)})
    return out[:LIMIT]


def main() -> None:
    target = Path(__file__).parent / "sample" / "corpus.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = records()
    with target.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} documents to {target}")


if __name__ == "__main__":
    main()
