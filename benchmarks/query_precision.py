"""The query encoder's precision, measured against the same document vectors (the default encoder's, as a build
stores them): float32, bfloat16, and int8 dynamic quantisation (torch's own, over the float32 model; embeddings,
norms and attention stay float32) of every linear layer with one scale per weight matrix or per output channel,
or of the MLP's linear layers only. For each: calibrated dense and default-mode
NDCG@10 x100 (calibration as shipped, fitted once on the documents' own pseudo-queries), and the time to encode
one query alone (as a lone search does), median over the judged queries, all variants taking turns query by
query so that they share the machine's state. Reuses benchmarks.calibration's cached encodings.

    python -m benchmarks.query_precision
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from benchmarks.harness.collection import Collection, collection_arguments, prepared
from benchmarks.harness.report import cpu_name, write_report
from htp import EncoderConfig, HTPEncoder
from htp.models import cpu_has_native_bf16
from pipeline.ingest.calibration import PENALTY
from pipeline.vectors import prepare


def variants(default: HTPEncoder) -> dict[str, HTPEncoder]:
    """The query encoders compared, each built once (the default is one of float32 and bfloat16)."""

    def in_dtype(dtype: str) -> HTPEncoder:
        return default if default.dtype == dtype else HTPEncoder(replace(default.config, dtype=dtype))

    float32 = in_dtype("float32")

    def int8(spec: Any) -> HTPEncoder:
        # quantize_dynamic is torch's own int8 linear (fbgemm/oneDNN); torchao's replacement is not installed here
        model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(float32.model), spec, dtype=torch.qint8)
        return HTPEncoder(float32.config, model, float32.tokenizer)

    per_channel = torch.ao.quantization.per_channel_dynamic_qconfig
    mlp = {
        name: per_channel
        for name, module in float32.model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".mlp." in name
    }
    return {
        "float32": float32,
        "bfloat16": in_dtype("bfloat16"),
        "int8 linear, per tensor": int8({torch.nn.Linear}),
        "int8 linear, per channel": int8({torch.nn.Linear: per_channel}),
        "int8 MLP only, per channel": int8(mlp),
    }


def lone_query_ms(encoders: dict[str, HTPEncoder], questions: list[str]) -> dict[str, float]:
    """Median milliseconds to encode one query alone, per encoder, the encoders taking turns."""
    for encoder in encoders.values():
        encoder.encode(questions[:3], kind="query")
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for question in questions:
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode([question], kind="query")
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def collection_rows(collection: Collection, encoders: dict[str, HTPEncoder], count: int, seed: int) -> list[dict]:
    """NDCG and lone-query time of each query encoder against the collection's stored document vectors."""
    calibration = collection.fit(PENALTY, count, seed)
    questions = [collection.data.queries[q] for q in collection.query_ids]
    reference = None
    rows = []
    for name, encoder in encoders.items():
        vectors = encoder.encode(questions, kind="query")
        reference = vectors if reference is None else reference
        cosine = np.sum(prepare(vectors, None) * prepare(reference, None), axis=1)
        collection.queries = prepare(vectors, collection.center)
        dense = collection.dense(calibration)
        rows.append(
            {
                "collection": collection.name,
                "queries": name,
                "fusion": calibration.fusion.label,
                "dense": collection.ndcg(dense),
                "default": collection.ndcg(collection.hybrid(dense, calibration.fusion)),
                "cosine_to_float32": {"min": float(cosine.min()), "mean": float(cosine.mean())},
            }
        )
        print(rows[-1], flush=True)
    for row, ms in zip(rows, lone_query_ms(encoders, questions[:60]).values()):
        row["lone_query_ms"] = ms
    return rows


def main(argv: list[str] | None = None) -> None:
    args = collection_arguments(__doc__, "benchmarks/results/query_precision.md").parse_args(argv)
    torch.set_num_threads(2)
    default = HTPEncoder(EncoderConfig(device="cpu"))
    encoders = variants(default)
    rows = []
    for collection in prepared(args, default):
        rows += collection_rows(collection, encoders, args.pseudo_queries, args.seed)
    lines = [
        f"Query encoder precision against the same document vectors ({default.config.model}, documents in "
        f"{default.dtype}, the default on this CPU ({cpu_name()}, native bfloat16: "
        f"{cpu_has_native_bf16()}), calibrated as shipped). NDCG@10 x100 on the test half (all judged queries in "
        "brackets); cosine of each query vector to float32's; one query encoded alone, median of 60 (the variants "
        "in turns).",
        "",
        "| collection | queries | dense test (all) | default test (all) | cosine min / mean | lone query ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['collection']} | {r['queries']} | {r['dense']['test']:.2f} ({r['dense']['all']:.2f}) | "
        f"{r['default']['test']:.2f} ({r['default']['all']:.2f}) ({r['fusion']}) | "
        f"{r['cosine_to_float32']['min']:.4f} / {r['cosine_to_float32']['mean']:.4f} | {r['lone_query_ms']:.1f} |"
        for r in rows
    ]
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
