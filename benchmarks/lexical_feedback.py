"""BM25 with RM3 query expansion, measured once: does lexical pseudo-relevance feedback help BM25 alone and the
calibrated default (its dense half fused with RM3's ranking in place of BM25's) on both collections? RM3 as in
Anserini: the top n BM25 hits, each weighted by its share of their scores, give every word the score-weighted
mean of its share of a hit's words; the t heaviest words, normalised, are mixed with the query's own words
(weight lambda on the original). The setting is chosen on one collection's dev half and reported on the other.
Calibration as shipped, from benchmarks.calibration's cached encodings. NDCG@10 x100.

    python -m benchmarks.lexical_feedback
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from benchmarks.calibration import DEPTH, Collection, collection_arguments, prepared
from benchmarks.common import write_report
from htp import EncoderConfig, HTPEncoder
from indexes.lexical import build_bm25, words
from pipeline.calibration import PENALTY
from pipeline.fusion import fuse

FEEDBACK_DOCS = (3, 5, 10)
FEEDBACK_TERMS = (10, 20, 40)
ORIGINAL_WEIGHTS = (0.3, 0.5, 0.7)
Ranking = list[list[tuple[int, float]]]


class Expansion:
    """RM3 over one collection's BM25 index. Weighted queries are scored here, from the index's own
    word-by-document matrix, because bm25s scores only unweighted word lists: a query's score for a document is
    the sum over its words of weight times that word's BM25 entry for the document (bm25s's formula, weighted)."""

    def __init__(self, texts: list[str], queries: list[str]) -> None:
        self.model = build_bm25(texts)
        self.counts = [Counter(doc) for doc in words(texts)]
        self.queries = [Counter(query) for query in words(queries)]
        self.documents = len(texts)

    def score(self, weights: dict[str, float]) -> np.ndarray:
        scores = self.model.scores
        total = np.zeros(self.documents, dtype=np.float64)
        for word, weight in weights.items():
            column = self.model.vocab_dict.get(word)
            if column is None:
                continue
            start, stop = int(scores["indptr"][column]), int(scores["indptr"][column + 1])
            np.add.at(total, scores["indices"][start:stop], weight * scores["data"][start:stop])
        return total

    def expanded(
        self, query: Counter, hits: list[tuple[int, float]], docs: int, terms: int, original: float
    ) -> dict[str, float]:
        """The RM3 query: the original words (weight `original`, split by count) and the feedback words."""
        top = [(row, score) for row, score in hits[:docs] if score > 0]
        mass = sum(score for _, score in top)
        feedback: Counter = Counter()
        for row, score in top:
            length = sum(self.counts[row].values())
            for word, count in self.counts[row].items():
                feedback[word] += score / mass * count / length
        heaviest = feedback.most_common(terms)
        norm = sum(weight for _, weight in heaviest) or 1.0
        size = sum(query.values()) or 1
        weights = {word: original * count / size for word, count in query.items()}
        for word, weight in heaviest:
            weights[word] = weights.get(word, 0.0) + (1 - original) * weight / norm
        return weights

    def rankings(self, first: Ranking, docs: int, terms: int, original: float) -> Ranking:
        out = []
        for query, hits in zip(self.queries, first):
            scores = self.score(self.expanded(query, hits, docs, terms, original))
            top = np.argsort(-scores, kind="stable")[:DEPTH]
            out.append([(int(r), float(scores[r])) for r in top if scores[r] > 0])
        return out


def collection_rows(collection: Collection, count: int, seed: int) -> list[dict]:
    """BM25 and calibrated-hybrid NDCG of every RM3 setting, and of plain BM25 (docs 0)."""
    calibration = collection.fit(PENALTY, count, seed)
    dense = collection.dense(calibration)
    expansion = Expansion(collection.texts, [collection.data.queries[q] for q in collection.query_ids])

    def row(docs: int, terms: int, original: float, lexical: Ranking) -> dict:
        hybrid = [fuse(d, b, calibration.fusion, DEPTH) for d, b in zip(dense, lexical)]
        return {
            "docs": docs,
            "terms": terms,
            "original": original,
            "fusion": calibration.fusion.label,
            "bm25": collection.ndcg(lexical),
            "hybrid": collection.ndcg(hybrid),
        }

    rows = [row(0, 0, 1.0, collection.bm25)]
    for docs, terms, original in itertools.product(FEEDBACK_DOCS, FEEDBACK_TERMS, ORIGINAL_WEIGHTS):
        rows.append(row(docs, terms, original, expansion.rankings(collection.bm25, docs, terms, original)))
        print(collection.name, rows[-1], flush=True)
    return rows


def best(rows: list[dict], measure: str) -> dict:
    """The RM3 setting with the highest dev-half NDCG on `measure` (plain BM25 included)."""
    return max(rows, key=lambda r: r[measure]["dev"])


def main(argv: list[str] | None = None) -> None:
    args = collection_arguments(__doc__, "benchmarks/results/lexical_feedback.md").parse_args(argv)
    encoder = HTPEncoder(EncoderConfig(device="cpu"))
    results = {}
    for collection in prepared(args, encoder):
        results[collection.name] = collection_rows(collection, args.pseudo_queries, args.seed)

    def label(r: dict) -> str:
        return "plain BM25" if not r["docs"] else f"n={r['docs']}, t={r['terms']}, lambda={r['original']:g}"

    lines = [
        f"BM25 with RM3 expansion, alone and in the calibrated default ({encoder.config.model}, {encoder.dtype}; its "
        "dense half fused, with the fusion calibration chose, with RM3's ranking instead of BM25's). NDCG@10 x100 on "
        "the real queries' test half (all queries in brackets). A setting is chosen by its dev-half NDCG on one "
        "collection and applied to each.",
        "",
        "| chosen on | for | setting | collection | BM25 test (all) | + RM3 test (all) | default test (all) | "
        "default with RM3 test (all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, measure in itertools.product(results, ("bm25", "hybrid")):
        chosen = best(results[source], measure)
        for name, rows in results.items():
            plain = rows[0]
            same = next(
                r
                for r in rows
                if (r["docs"], r["terms"], r["original"]) == (chosen["docs"], chosen["terms"], chosen["original"])
            )
            lines.append(
                f"| {source} | {measure} | {label(chosen)} | {name} | "
                + " | ".join(
                    f"{r[m]['test']:.2f} ({r[m]['all']:.2f})"
                    for r, m in ((plain, "bm25"), (same, "bm25"), (plain, "hybrid"), (same, "hybrid"))
                )
                + " |"
            )
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
