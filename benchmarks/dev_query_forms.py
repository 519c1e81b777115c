"""Do development queries written like real ones make calibration's verdicts agree with real queries? The
label-free development set asks each removed sentence as a query; here it is also asked as its content words
(BM25's own tokens: lower-cased, stopwords dropped), as the first 8 of them, or the first 4 (short keyword
queries). For each form: calibration as shipped (penalty 1e-2, 2,000 pseudo-queries), what it chose, the
calibrated default's NDCG@10 x100 on the real queries, and the Spearman correlation between the development
set's order of 14 fusion options and the real queries' order. Reuses benchmarks.calibration's cached encodings.

    python -m benchmarks.dev_query_forms
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.calibration import Collection, collection_arguments
from benchmarks.common import write_report
from htp import EncoderConfig, HTPEncoder
from indexes.lexical import words
from pipeline.calibration import PENALTY


def content_words(limit: int | None) -> Callable[[str], str]:
    """A sentence as its first `limit` content words (all when None); the sentence itself if it has none."""

    def form(sentence: str) -> str:
        kept = words([sentence])[0][:limit]
        return " ".join(kept) if kept else sentence

    return form


FORMS: dict[str, Callable[[str], str] | None] = {
    "sentence (shipped)": None,
    "content words": content_words(None),
    "first 8 content words": content_words(8),
    "first 4 content words": content_words(4),
}


def main(argv: list[str] | None = None) -> None:
    args = collection_arguments(__doc__, "benchmarks/results/dev_query_forms.md").parse_args(argv)
    encoder = HTPEncoder(EncoderConfig(device="cpu"))
    rows = []
    for name in args.datasets.split(","):
        collection = Collection(args.data / name, args.cache, encoder, args.seed)
        for label, form in FORMS.items():
            collection.at(encoder.layers_run, args.pseudo_queries, 200, args.seed, form)
            calibration = collection.fit(PENALTY, args.pseudo_queries, args.seed)
            settings = calibration.settings()
            rows.append(
                {
                    "collection": name,
                    "form": label,
                    "adapter_steps": settings["adapter_steps"],
                    "bias_weight": settings["bias_weight"],
                    "fusion": calibration.fusion.label,
                    "default": collection.ndcg(collection.hybrid(collection.dense(calibration), calibration.fusion)),
                    "spearman": collection.agreement(calibration)["spearman"],
                }
            )
            print(rows[-1], flush=True)
    lines = [
        f"Development queries in other forms ({encoder.config.model}, {encoder.dtype}; calibration as shipped). "
        "NDCG@10 x100 of the calibrated default on the real queries, test half (all in brackets); Spearman: the "
        "development set's order of 14 fusion options against the real queries' (all).",
        "",
        "| collection | development queries | adapter step | correction | fusion | default test (all) | Spearman |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['collection']} | {r['form']} | {r['adapter_steps']} | {r['bias_weight']} | {r['fusion']} | "
        f"{r['default']['test']:.2f} ({r['default']['all']:.2f}) | {r['spearman']:.2f} |"
        for r in rows
    ]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
