"""A BM25 index beside the dense one, with bm25s: lower-cased, English stopwords, no stemming.

Tokenisation is fixed (no optional stemmer that would depend on what a machine has installed), so the same
corpus gives the same index and the same scores everywhere; the measured BM25 figures in README.md use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np

from indexes.errors import IndexMissingError, IndexValueError

logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG, which `htp -v` would print


def _tokens(texts: list[str], ids: bool):
    """bm25s tokens of texts: ids plus vocabulary for indexing, word lists for queries."""
    return bm25s.tokenize(texts, lower=True, stopwords="en", return_ids=ids, show_progress=False)


@dataclass(frozen=True)
class Terms:
    """Every document's token ids (into the BM25 vocabulary), kept beside the index so a change re-scores the
    corpus without tokenising it again: document i's tokens are tokens[offsets[i]:offsets[i + 1]]."""

    tokens: np.ndarray  # int32
    offsets: np.ndarray  # int64, one more than there are documents

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> Terms:
        """The terms of these documents, in this order."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        picked = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        return Terms(np.asarray(self.tokens)[picked], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def __add__(self, other: Terms) -> Terms:
        return Terms(
            np.concatenate([self.tokens, other.tokens]).astype(np.int32),
            np.concatenate([self.offsets[:-1], other.offsets + self.offsets[-1]]).astype(np.int64),
        )


def build_bm25(texts: list[str]) -> bm25s.BM25:
    """Index texts in order: row i of the results is texts[i]."""
    return build_bm25_terms(texts)[0]


def build_bm25_terms(texts: list[str]) -> tuple[bm25s.BM25, Terms]:
    """BM25 over texts in order, and the terms it was scored from (what a change needs to re-score)."""
    if not texts:
        raise IndexValueError("build_bm25 needs at least one text")
    tokenized = _tokens(texts, ids=True)
    vocab = dict(tokenized.vocab)
    vocab.setdefault("", len(vocab))  # bm25s's empty token: queries with no known word still score
    lengths = np.array([len(ids) for ids in tokenized.ids], dtype=np.int64)
    flat = np.fromiter((i for ids in tokenized.ids for i in ids), dtype=np.int32, count=int(lengths.sum()))
    terms = Terms(flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    return scored(terms, vocab), terms


def changed_bm25(model: bm25s.BM25, terms: Terms, kept: np.ndarray, texts: list[str]) -> tuple[bm25s.BM25, Terms]:
    """BM25 over the documents `kept` (rows of `terms`, in order) followed by new `texts`: only the new texts are
    tokenised; their new words extend the vocabulary."""
    vocab = dict(model.vocab_dict)
    words = _tokens(texts, ids=False) if texts else []
    lengths = np.array([len(doc) for doc in words], dtype=np.int64)
    flat = np.fromiter(
        (vocab.setdefault(word, len(vocab)) for doc in words for word in doc), dtype=np.int32, count=int(lengths.sum())
    )
    added = Terms(flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    terms = terms.take(kept) + added
    return scored(terms, vocab), terms


def scored(terms: Terms, vocab: dict[str, int], k1: float = 1.5, b: float = 0.75) -> bm25s.BM25:
    """A bm25s index (its Lucene BM25 with bm25s's defaults) scored from term counts. Written here because bm25s
    builds only from a whole corpus, in Python loops per document: the same formula over stored counts lets a
    change re-score without re-tokenising, and a build use it too, so both give the same scores."""
    documents, words = len(terms), len(vocab)
    lengths = np.diff(terms.offsets)
    doc = np.repeat(np.arange(documents, dtype=np.int64), lengths)
    pairs, tf = np.unique(doc * words + np.asarray(terms.tokens, dtype=np.int64), return_counts=True)
    doc, word = pairs // words, pairs % words
    df = np.bincount(word, minlength=words)
    idf = np.log(1 + (documents - df + 0.5) / (df + 0.5)).astype(np.float32)
    average = max(float(lengths.mean()) if documents else 0.0, 1e-9)
    tf = tf.astype(np.float32)
    tfc = tf / (k1 * ((1 - b) + b * lengths[doc] / average) + tf)
    order = np.lexsort((doc, word))  # column-major: bm25s keeps one column of documents per word
    model = bm25s.BM25(k1=k1, b=b)
    model.scores = {
        "data": (idf[word] * tfc)[order].astype(np.float32),
        "indices": doc[order].astype(np.int32),
        "indptr": np.concatenate([[0], np.cumsum(df)]).astype(np.int64),
        "num_docs": documents,
    }
    model.vocab_dict = vocab
    model.unique_token_ids_set = set(vocab.values())
    model.nonoccurrence_array = None
    return model


TOKENS, OFFSETS = "tokens.npy", "offsets.npy"


def save_terms(terms: Terms, folder: Path) -> None:
    """Write a corpus's terms into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / TOKENS, np.asarray(terms.tokens, dtype=np.int32))
    np.save(folder / OFFSETS, np.asarray(terms.offsets, dtype=np.int64))


def load_terms(folder: Path) -> Terms:
    """Terms written by save_terms, memory-mapped (read only when a change re-scores)."""
    try:
        return Terms(np.load(folder / TOKENS, mmap_mode="r"), np.load(folder / OFFSETS, mmap_mode="r"))
    except (ValueError, OSError) as err:
        raise IndexValueError(f"the BM25 terms in {folder} are damaged ({err.__class__.__name__}: {err})") from err


def save_bm25(model: bm25s.BM25, folder: Path) -> None:
    """Write the index's arrays and vocabulary into `folder`."""
    model.save(str(folder))


def load_bm25(folder: Path) -> bm25s.BM25:
    """Read an index written by save_bm25 (arrays memory-mapped)."""
    if not (Path(folder) / "params.index.json").is_file():
        raise IndexMissingError(f"no BM25 index in {folder}: write one with save_bm25")
    try:
        return bm25s.BM25.load(str(folder), mmap=True)
    except (ValueError, OSError, KeyError) as err:  # bm25s reads JSON and .npy files and names neither when they fail
        raise IndexValueError(
            f"the BM25 index in {folder} is damaged ({err.__class__.__name__}: {err}); rebuild the index"
        ) from err


def search_bm25(
    model: bm25s.BM25, queries: list[str], k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores float32 [q,k], row positions int64 [q,k]); k clipped to the corpus size, non-matches are -1;
    `allowed` (a bool per document) scores only those documents."""
    if k < 1:
        raise IndexValueError(f"k must be at least 1, got {k}")
    k = min(k, int(model.scores["num_docs"]))
    if not queries:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    mask = None if allowed is None else np.asarray(allowed, dtype=np.float32)
    rows, scores = model.retrieve(_tokens(queries, ids=False), k=k, show_progress=False, n_threads=1, weight_mask=mask)
    rows = np.where(scores > 0, rows, -1).astype(np.int64)
    return scores.astype(np.float32), rows
