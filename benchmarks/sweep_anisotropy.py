"""Measure the anisotropy fixes on the default model: raw, corpus-mean centering, whitening, final norm.

HTP with the chosen defaults (exit layer 28, window [1, 2), query instruction) encodes CISI twice, without
and with the model's final RMSNorm applied at the exit layer. Each set of vectors is then scored raw,
centred, and whitened (BERT-whitening: centre, rotate onto the corpus covariance's eigenvectors, scale
each axis to unit variance, optionally keeping the top `d` axes), fitted on the corpus only. The dev half
of the judged queries decides; the test half is shown beside it.

Whitening is measured here rather than offered in the pipeline: it is written out with numpy because it
is a few lines on a covariance matrix, and it goes into `pipeline/vectors.py` only if it wins on dev.

    python -m benchmarks.sweep_anisotropy --dataset ../shared/data/cisi
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.report import write_report
from benchmarks.harness.tasks import dense_run, ndcg
from htp import EncoderConfig, HTPEncoder
from htp.models import load_model, pick_device
from pipeline.evaluation.beir import load_beir, split_queries
from pipeline.records import full_text
from pipeline.vectors import prepare

WHITEN_DIMS = (None, 256, 128)


def whitening(docs: np.ndarray, keep: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) so that (x - mean) @ projection has identity covariance over the corpus."""
    mean = docs.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((docs - mean).T))
    order = np.argsort(values)[::-1][:keep]
    return mean, vectors[:, order] / np.sqrt(np.maximum(values[order], 1e-12))


def transforms(docs: np.ndarray, queries: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every post-processing under test, as (prepared docs, prepared queries)."""
    out = {"raw": (prepare(docs, None), prepare(queries, None))}
    center = docs.mean(axis=0)
    out["centered"] = (prepare(docs, center), prepare(queries, center))
    for keep in WHITEN_DIMS:
        mean, projection = whitening(docs, keep)
        out[f"whitened to {keep or docs.shape[1]} dims"] = (
            prepare((docs - mean) @ projection, None),
            prepare((queries - mean) @ projection, None),
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """Encode, score every transform on dev and test halves, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cisi"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_anisotropy.md"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    data = load_beir(args.dataset)
    dev, test = split_queries(data, args.seed)
    doc_ids, query_ids = list(data.corpus), list(data.queries)
    texts = [full_text(data.corpus[d].get("title"), data.corpus[d]["text"]) for d in doc_ids]
    model, tokenizer = load_model("smollm2-135m", pick_device("cpu"), torch.float32)
    rows = []
    for final_norm in (False, True):
        encoder = HTPEncoder(EncoderConfig(method="htp", final_norm=final_norm), model, tokenizer)
        docs = encoder.encode(texts, kind="document", show_progress=True)
        queries = encoder.encode([data.queries[q] for q in query_ids], kind="query")
        for name, (d, q) in transforms(docs, queries).items():
            run = dense_run(q, d, query_ids, doc_ids)
            rows.append(
                {
                    "final_norm": final_norm,
                    "transform": name,
                    "dev": ndcg(data, dev.judged_query_ids(), run),
                    "test": ndcg(data, test.judged_query_ids(), run),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    start, stop = encoder.config.window
    lines = [
        f"HTP (exit layer {encoder.layers_run}, window [{start}, {stop})), CISI seed-{args.seed} halves, "
        f"NDCG@10 x100; {time.perf_counter() - began:.0f} s.",
        "",
        "| final norm | transform | dev | test |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {'yes' if r['final_norm'] else 'no'} | {r['transform']} | {r['dev']:.2f} | {r['test']:.2f} |" for r in rows
    ]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
