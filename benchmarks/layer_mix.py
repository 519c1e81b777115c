"""Is the mean of several exit layers a better document and query vector than the one exit layer? Each mix averages
the HTP vectors of its layers, each less its layer's document mean and at unit length (one forward pass gives them
all; a mix reaching past the exit layer runs those layers too). For each mix and collection: dense NDCG@10 x100
uncalibrated, and the calibrated default as shipped (penalty 1e-2, 2,000 pseudo-queries); then the mix each
collection's real dev half prefers (by the calibrated default), reported on the other collection and on its own
test half, and the mean-of-both choice. Reuses benchmarks.calibration's cached encodings (every exit layer).

    python -m benchmarks.layer_mix
"""

from __future__ import annotations

import numpy as np

from benchmarks.calibration import Collection, collection_arguments
from benchmarks.common import write_report
from htp import EncoderConfig, HTPEncoder
from pipeline.calibration import PENALTY

MIXES = ((13,), (12, 13), (11, 12, 13), (9, 10, 11, 12, 13), (12, 13, 14), (11, 12, 13, 14, 15), (13, 14, 15))


def main(argv: list[str] | None = None) -> None:
    args = collection_arguments(__doc__, "benchmarks/results/layer_mix.md").parse_args(argv)
    encoder = HTPEncoder(EncoderConfig(device="cpu"))
    names = args.datasets.split(",")
    scores: dict[str, dict[str, dict]] = {}
    for name in names:
        collection = Collection(args.data / name, args.cache, encoder, args.seed)
        for mix in MIXES:
            collection.at(mix, args.pseudo_queries, 200, args.seed)
            calibration = collection.fit(PENALTY, args.pseudo_queries, args.seed)
            calibrated = collection.dense(calibration)
            scores.setdefault(name, {})[label(mix)] = {
                "dense": collection.ndcg(collection.dense(None)),
                "dense_calibrated": collection.ndcg(calibrated),
                "default": collection.ndcg(collection.hybrid(calibrated, calibration.fusion)),
                "fusion": calibration.fusion.label,
            }
            print(name, label(mix), scores[name][label(mix)], flush=True)
    lines = [
        f"Exit-layer mixes ({encoder.config.model}, {encoder.dtype}; the mean of each layer's vectors less their "
        "document mean, at unit length; calibration as shipped). NDCG@10 x100 on the real queries, all (test half "
        "in brackets).",
        "",
        "| collection | layers | dense | dense, calibrated | default | fusion |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {mix} | {v['dense']['all']:.2f} ({v['dense']['test']:.2f}) | "
        f"{v['dense_calibrated']['all']:.2f} ({v['dense_calibrated']['test']:.2f}) | "
        f"{v['default']['all']:.2f} ({v['default']['test']:.2f}) | {v['fusion']} |"
        for name, by_mix in scores.items()
        for mix, v in by_mix.items()
    ]
    lines += ["", "Chosen by the calibrated default on the real dev half(s), reported elsewhere:", ""]
    choices = {}
    for chooser in [[n] for n in names] + [names]:
        best = max(scores[names[0]], key=lambda m: np.mean([scores[n][m]["default"]["dev"] for n in chooser]))
        choices[",".join(chooser)] = best
        reported = {n: "test" if n in chooser else "all" for n in names}
        single = label(MIXES[0])
        lines.append(
            f"- chosen on {' and '.join(chooser)}: layers {best}; "
            + "; ".join(
                f"{n} {half} {scores[n][best]['default'][half]:.2f} (exit layer {single}: "
                f"{scores[n][single]['default'][half]:.2f})"
                for n, half in reported.items()
            )
        )
    write_report(args.out, lines, {"scores": scores, "choices": choices})


def label(mix: tuple[int, ...]) -> str:
    return f"{mix[0]}" if len(mix) == 1 else f"{mix[0]}-{mix[-1]}"


if __name__ == "__main__":
    main()
