"""A BM25 index beside the dense one, with bm25s: lower-cased, English stopwords, no stemming.

Tokenisation is fixed (no optional stemmer that would depend on what a machine has installed), so the same
corpus gives the same index and the same scores everywhere; the measured BM25 figures in docs/results use it.
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


def words(texts: list[str]) -> list[list[str]]:
    """The words BM25 indexes and scores of each text (lower-cased, English stopwords dropped)."""
    return _tokens(texts, ids=False)


@dataclass(frozen=True)
class Terms:
    """What BM25 scores are computed from, kept beside the index so a change re-scores without tokenising the
    corpus again: the term frequency of each entry of the index's word-by-document matrix (in the order of its
    `indices`, column by column) and each document's length in tokens."""

    tf: np.ndarray  # float32 [entries]
    lengths: np.ndarray  # int64 [documents]


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
    flat = np.fromiter((i for ids in tokenized.ids for i in ids), dtype=np.int64, count=int(lengths.sum()))
    docs, words, tf = _counts(np.repeat(np.arange(len(texts), dtype=np.int64), lengths), flat)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(words, minlength=len(vocab)))])
    terms = Terms(tf, lengths)
    return scored(docs, indptr, terms, vocab), terms


def _counts(docs: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, word, term frequency) of every distinct pair among these tokens, word by word, then by document
    (bm25s's column order)."""
    span = int(docs.max(initial=0)) + 1
    pairs, tf = np.unique(words * span + docs, return_counts=True)
    return pairs % span, pairs // span, tf.astype(np.float32)


def changed_bm25(model: bm25s.BM25, terms: Terms, kept: np.ndarray, texts: list[str]) -> tuple[bm25s.BM25, Terms]:
    """BM25 over the documents `kept` (a bool per document, order kept) followed by new `texts`: only the new
    texts are tokenised (their new words extend the vocabulary), and the stored entries are merged with theirs
    column by column, so no sort runs over the corpus."""
    vocab = dict(model.vocab_dict)
    indices, indptr = np.asarray(model.scores["indices"]), np.asarray(model.scores["indptr"], dtype=np.int64)
    if len(terms.tf) != len(indices) or len(terms.lengths) != len(kept):
        raise IndexValueError(
            f"the BM25 terms ({len(terms.tf)} entries, {len(terms.lengths)} documents) do not match the index "
            f"({len(indices)} entries, {len(kept)} documents): rebuild it with htp build"
        )
    words = _tokens(texts, ids=False) if texts else []
    new_lengths = np.array([len(doc) for doc in words], dtype=np.int64)
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for doc in words for w in doc), np.int64, int(new_lengths.sum()))
    width = len(vocab)
    stays = kept[indices]
    gone_words = np.searchsorted(indptr, np.flatnonzero(~stays), side="right") - 1
    counts = np.zeros(width, dtype=np.int64)
    counts[: len(indptr) - 1] = np.diff(indptr)
    counts -= np.bincount(gone_words, minlength=width)
    new_docs, new_words, new_tf = _counts(
        np.repeat(np.arange(len(words), dtype=np.int64), new_lengths) + int(kept.sum()), ids
    )
    # a new entry goes after the kept entries of its word (np.insert keeps the new ones in their word, doc order)
    at = np.concatenate([[0], np.cumsum(counts)])[new_words + 1]
    position = np.cumsum(kept) - 1  # a kept document's new row
    docs = np.insert(position[indices[stays]], at, new_docs)
    tf = np.insert(np.asarray(terms.tf)[stays], at, new_tf)
    merged = np.concatenate([[0], np.cumsum(counts + np.bincount(new_words, minlength=width))])
    changed = Terms(tf, np.concatenate([np.asarray(terms.lengths)[kept], new_lengths]))
    return scored(docs, merged, changed, vocab), changed


def scored(
    docs: np.ndarray, indptr: np.ndarray, terms: Terms, vocab: dict[str, int], k1: float = 1.5, b: float = 0.75
) -> bm25s.BM25:
    """A bm25s index (its Lucene BM25 with bm25s's defaults) from its word-by-document entries: the document of
    each entry, where each word's entries start, and their term frequencies. Written here because bm25s builds
    only from a whole corpus, in Python loops per document: the same formula over stored counts lets a change
    re-score without re-tokenising, and a build uses it too, so both give the same scores."""
    documents = len(terms.lengths)
    df = np.diff(indptr)
    idf = np.log(1 + (documents - df + 0.5) / (df + 0.5)).astype(np.float32)
    average = max(float(terms.lengths.mean()) if documents else 0.0, 1e-9)
    word = np.repeat(np.arange(len(df), dtype=np.int64), df)
    norm = (k1 * ((1 - b) + b * np.asarray(terms.lengths, dtype=np.float32) / average)).astype(np.float32)
    tf = np.asarray(terms.tf, dtype=np.float32)
    model = bm25s.BM25(k1=k1, b=b)
    model.scores = {
        "data": (idf[word] * (tf / (norm[docs] + tf))).astype(np.float32),
        "indices": docs.astype(np.int32),
        "indptr": indptr.astype(np.int64),
        "num_docs": documents,
    }
    model.vocab_dict = vocab
    model.unique_token_ids_set = set(vocab.values())
    model.nonoccurrence_array = None
    return model


TF, LENGTHS = "tf.npy", "lengths.npy"


def save_terms(terms: Terms, folder: Path) -> None:
    """Write a corpus's terms into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / TF, np.asarray(terms.tf, dtype=np.float32))
    np.save(folder / LENGTHS, np.asarray(terms.lengths, dtype=np.int64))


def load_terms(folder: Path) -> Terms:
    """Terms written by save_terms, memory-mapped (read only when a change re-scores)."""
    try:
        return Terms(np.load(folder / TF, mmap_mode="r"), np.load(folder / LENGTHS, mmap_mode="r"))
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
