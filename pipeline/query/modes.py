"""The search modes, in one table that configuration, the CLI, the service, its page (through /info) and evaluation
all read: a new mode is a row here and the Searcher method it names."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import PipelineValueError


@dataclass(frozen=True)
class SearchMode:
    """One way to rank: the Searcher method that does it, whether it needs the index's BM25 part and the encoder,
    and how an evaluation labels its row for an encoding method."""

    name: str
    description: str
    ranker: str
    needs_bm25: bool
    label: str  # "{method}" is replaced by the encoding method's name
    needs_encoder: bool = True

    def label_for(self, method: str) -> str:
        return self.label.format(method=method)


MODES: dict[str, SearchMode] = {
    mode.name: mode
    for mode in (
        SearchMode("dense", "the encoder's vectors alone", "dense", needs_bm25=False, label="{method}"),
        SearchMode(
            "bm25", "BM25 alone (no model is loaded)", "lexical", needs_bm25=True, label="bm25", needs_encoder=False
        ),
        SearchMode(
            "hybrid",
            "dense and BM25 fused (the fusion calibration chose)",
            "hybrid",
            needs_bm25=True,
            label="{method}+bm25",
        ),
    )
}
SEARCH_MODES = tuple(MODES)


def search_mode(name: str) -> SearchMode:
    """The mode of this name; an unknown name is refused with the modes there are."""
    if name not in MODES:
        raise PipelineValueError(f"mode {name!r} is not one of {', '.join(MODES)}")
    return MODES[name]
