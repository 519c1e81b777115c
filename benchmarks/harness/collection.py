"""The one collection class: a BEIR folder, its cached HTP encodings at every exit layer, BM25's ranking of its
real queries, split into a dev half that chooses settings and a test half that reports them, and the
calibration data a build would draw from it; plus the command line of a benchmark over such collections."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.harness.cache import cached_layers, minilm_vectors
from htp import HTPEncoder
from htp.segment import Segmenter
from indexes.lexical import build_bm25, search_bm25
from pipeline.evaluation.beir import BeirData, load_beir, split_queries
from pipeline.evaluation.metrics import evaluate_run
from pipeline.ingest.calibration import Calibration, CalibrationData, calibration_data, fit
from pipeline.query.fusion import FusionChoice, fuse
from pipeline.records import full_text
from pipeline.vectors import prepare

DEPTH = 100  # hits ranked per query: NDCG@10 and Recall@100 read from these


class Collection:
    """One BEIR folder (the shape of faiss contrib.datasets: documents, queries, judgements) with its cached
    HTP encodings (every exit layer) and, once `at` chose an exit layer, its
    prepared vectors and calibration data there."""

    def __init__(self, folder: Path, cache: Path, encoder: HTPEncoder, seed: int) -> None:
        self.name = folder.name
        self.data: BeirData = load_beir(folder)
        self.doc_ids = list(self.data.corpus)
        self.texts = texts = [
            full_text(self.data.corpus[d].get("title"), self.data.corpus[d]["text"]) for d in self.doc_ids
        ]
        self.query_ids = self.data.judged_query_ids()
        dev_half, test_half = split_queries(self.data, seed)
        self.halves = {"all": self.query_ids, "dev": dev_half.judged_query_ids(), "test": test_half.judged_query_ids()}
        self.cache, self.encoder = cache, encoder
        self.layer_docs = self.encode(texts, "document")
        self.layer_queries = self.encode([self.data.queries[q] for q in self.query_ids], "query")
        scores, rows = search_bm25(build_bm25(texts), [self.data.queries[q] for q in self.query_ids], DEPTH)
        self.bm25 = [[(int(r), float(s)) for r, s in zip(rr, sr) if r >= 0] for rr, sr in zip(rows, scores)]

    def encode(self, items: list[str], kind: str, tag: str = "") -> np.ndarray:
        """[exit layers, n, d] encodings, cached per model setting (the config is in the cache key)."""
        return cached_layers(self.cache, self.name + tag, items, self.encoder.config, kind, self.encoder)

    def dense_curve(self) -> dict[int, dict[str, float]]:
        """Uncalibrated dense NDCG@10 per exit layer (1-based) and half."""
        curve = {}
        for layer in range(1, self.layer_docs.shape[0] + 1):
            center = np.asarray(self.layer_docs[layer - 1]).mean(axis=0)
            docs = prepare(self.layer_docs[layer - 1], center)
            queries = prepare(self.layer_queries[layer - 1], center)
            curve[layer] = self.ndcg(self.top(queries @ docs.T))
        return curve

    def at(self, exit_layer: int, pseudo: int, dev: int, seed: int) -> None:
        """Prepare vectors and calibration data at one exit layer (1-based)."""
        raw_docs = np.asarray(self.layer_docs[exit_layer - 1])
        self.center = raw_docs.mean(axis=0)
        self.docs = prepare(raw_docs, self.center)
        self.queries = prepare(self.layer_queries[exit_layer - 1], self.center)
        segmenter = Segmenter(self.encoder.config.spacy_model)
        self.calibration_data: CalibrationData = calibration_data(
            self.texts,
            self.docs,
            self.center,
            lambda items, kind: np.asarray(self.encode(items, kind, "-calibration")[exit_layer - 1]),
            segmenter.sentence_starts,
            pseudo,
            dev,
            seed,
            bm25=True,
            same_input=self.encoder.same_input,
        )

    @staticmethod
    def top(scores: np.ndarray) -> list[list[tuple[int, float]]]:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]
        return [[(int(r), float(scores[i, r])) for r in row] for i, row in enumerate(top)]

    def ndcg(self, rankings: list[list[tuple[int, float]]]) -> dict[str, float]:
        """NDCG@10 x100 on each half of the real queries."""
        run = {q: {self.doc_ids[r]: s for r, s in ranked} for q, ranked in zip(self.query_ids, rankings)}
        return {
            half: 100 * evaluate_run({q: self.data.qrels[q] for q in ids}, {q: run[q] for q in ids})["ndcg@10"]
            for half, ids in self.halves.items()
        }

    def dense(self, calibration: Calibration | None) -> list[list[tuple[int, float]]]:
        queries = self.queries if calibration is None else calibration.queries(self.queries)
        return self.top(queries @ self.docs.T)

    def hybrid(self, dense: list[list[tuple[int, float]]], choice: FusionChoice) -> list[list[tuple[int, float]]]:
        return [fuse(d, b, choice, DEPTH) for d, b in zip(dense, self.bm25)]

    def fit(self, penalty: float, count: int, seed: int) -> Calibration:
        d = self.calibration_data
        return fit(
            d.train_queries[:count],
            d.train_targets[:count],
            self.docs,
            d.dev_queries,
            d.dev_targets,
            d.dev_docs,
            d.dev_bm25,
            penalty=penalty,
            seed=seed,
        )

    def minilm(self, cache: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """Documents and queries through all-MiniLM-L6-v2, or None when not installed."""
        return minilm_vectors(cache, self.name, self.texts, [self.data.queries[q] for q in self.query_ids])


def collection_arguments(description: str, out: str) -> argparse.ArgumentParser:
    """The command line of a benchmark over these collections and their cached encodings (the calibration data
    at the shipped 2,000 pseudo-queries unless --pseudo-queries says otherwise)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", default="cisi,manpages-3")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--pseudo-queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser


def prepared(args: argparse.Namespace, encoder: HTPEncoder) -> Iterator[Collection]:
    """Each collection the arguments name, its calibration data prepared at the encoder's exit layer."""
    for name in args.datasets.split(","):
        collection = Collection(args.data / name, args.cache, encoder, args.seed)
        collection.at(encoder.layers_run, args.pseudo_queries, 200, args.seed)
        yield collection
