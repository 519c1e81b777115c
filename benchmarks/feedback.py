"""Dense pseudo-relevance feedback, measured once: does Rocchio on the top dense hits (q' = q + beta * mean of the
top m documents, re-normalised) help the calibrated default on both collections? Calibration as shipped (penalty
1e-2, 2,000 pseudo-queries, the fusion its development set chose); NDCG@10 x100 on the real queries, every
(m, beta) side by side with beta 0 (no feedback). Reuses benchmarks.calibration's cached encodings.

    python -m benchmarks.feedback
"""

from __future__ import annotations

import numpy as np

from benchmarks.calibration import Collection, collection_arguments, prepared
from benchmarks.common import write_report
from htp import EncoderConfig, HTPEncoder
from pipeline.calibration import PENALTY
from pipeline.vectors import prepare

DEPTHS = (3, 5, 10)
BETAS = (0.0, 0.3, 0.6, 1.0)


def feedback_rows(collection: Collection, count: int, seed: int) -> list[dict]:
    """Dense and calibrated-hybrid NDCG of every (m, beta), the calibration fitted once."""
    calibration = collection.fit(PENALTY, count, seed)
    queries = calibration.queries(collection.queries)
    top = np.argsort(-(queries @ collection.docs.T), axis=1, kind="stable")
    rows = []
    for depth in DEPTHS:
        centroid = collection.docs[top[:, :depth]].mean(axis=1)
        for beta in BETAS:
            dense = collection._top(prepare(queries + beta * centroid, None) @ collection.docs.T)
            hybrid = collection.hybrid(dense, calibration.fusion)
            rows.append(
                {
                    "m": depth,
                    "beta": beta,
                    "fusion": calibration.fusion.label,
                    "dense": collection.ndcg(dense),
                    "hybrid": collection.ndcg(hybrid),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    args = collection_arguments(__doc__, "benchmarks/results/feedback.md").parse_args(argv)
    encoder = HTPEncoder(EncoderConfig(device="cpu"))
    lines = [
        f"Dense pseudo-relevance feedback on the calibrated default ({encoder.config.model}, {encoder.dtype}): "
        "q' = q + beta * mean of the top m dense hits. NDCG@10 x100, all / test half; beta 0 is no feedback.",
        "",
        "| collection | m | beta | dense, all | dense, test | hybrid (fusion), all | hybrid, test |",
        "|---|---|---|---|---|---|---|",
    ]
    results = {}
    for collection in prepared(args, encoder):
        name = collection.name
        results[name] = rows = feedback_rows(collection, args.pseudo_queries, args.seed)
        lines += [
            f"| {name} | {r['m']} | {r['beta']:g} | {r['dense']['all']:.2f} | {r['dense']['test']:.2f} "
            f"| {r['hybrid']['all']:.2f} ({r['fusion']}) | {r['hybrid']['test']:.2f} |"
            for r in rows
            if r["beta"] or r["m"] == DEPTHS[0]
        ]
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
