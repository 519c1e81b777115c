"""What the encoder does on a GPU: HTP document throughput in float32, bfloat16 and float16 at several batch token
budgets, the vectors against CPU float32 (cosine), and a CISI index built and queried on the GPU; JSON and
Markdown out. Where no CUDA GPU is present it says so and exits at once (exit code 2); `--device cpu` runs every
step on the CPU instead (CI does, on a tiny model, to keep the script working).

    make gpu-check      # its own venv with a CUDA torch build, then this script on the default model
    python -m benchmarks.gpu_check --docs 2000 --budgets 16384,65536,262144 --dtypes float32,bfloat16,float16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.report import write_report
from htp import EncoderConfig, HTPEncoder
from htp.models import DTYPES
from pipeline.config import Config
from pipeline.evaluation.beir import load_beir
from pipeline.ingest.builder import build
from pipeline.query.searcher import Searcher
from pipeline.records import full_text


def throughput(encoder: HTPEncoder, texts: list[str], device: torch.device) -> tuple[np.ndarray, float]:
    """Vectors of `texts` and text tokens per second of one timed pass (after a short warm-up)."""
    encoder.encode(texts[:8], show_progress=False)
    before = encoder.stats.text_tokens
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    vectors = encoder.encode(texts, show_progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return vectors, (encoder.stats.text_tokens - before) / (time.perf_counter() - began)


def index_check(model: str, device: str, dataset: Path, docs: int, work: Path) -> dict:
    """Build an index over the first `docs` documents on `device` and ask it every judged query that has a
    relevant document among them; the share answered with one in the top 10, and the build and query times."""
    data = load_beir(dataset)
    ids = list(data.corpus)[:docs]
    corpus = work / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": i, "title": data.corpus[i].get("title") or "", "text": data.corpus[i]["text"]}) + "\n"
            for i in ids
        )
    )
    base = Config()
    config = replace(
        base,
        encoder=replace(base.encoder, model=model, device=device),
        paths=replace(base.paths, index_dir=str(work / "index")),
    )
    began = time.perf_counter()
    build(config, corpus, work / "index")
    built = time.perf_counter() - began
    kept = set(ids)
    queries = [q for q in data.judged_query_ids() if kept & set(data.qrels[q])]
    searcher = Searcher(work / "index", config)
    began = time.perf_counter()
    found = sum(bool(kept & {h.id for h in searcher.search(data.queries[q], 10)} & set(data.qrels[q])) for q in queries)
    return {
        "documents": len(ids),
        "build_s": built,
        "queries": len(queries),
        "query_ms": 1000 * (time.perf_counter() - began) / max(1, len(queries)),
        "share_with_a_relevant_hit": found / max(1, len(queries)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--model", default=EncoderConfig().model)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cisi"))
    parser.add_argument("--docs", type=int, default=2000, help="documents (CISI has 1,460: all of them)")
    parser.add_argument("--budgets", default="16384,65536,262144", help="batch_tokens values")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.md"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU here (torch {torch.__version__}, cuda {torch.version.cuda}): nothing to "
            "measure. Run it on a machine with one (make gpu-check), or with --device cpu.",
            file=sys.stderr,
        )
        return 2
    data = load_beir(args.dataset)
    texts = [full_text(d.get("title"), d["text"]) for d in list(data.corpus.values())[: args.docs]]
    reference = HTPEncoder(EncoderConfig(model=args.model, device="cpu", dtype="float32")).encode(texts)
    rows = []
    for dtype in args.dtypes.split(","):
        if dtype not in DTYPES:
            raise SystemExit(f"gpu_check: --dtypes: {dtype!r} is not one of {', '.join(DTYPES)}")
        encoder = HTPEncoder(EncoderConfig(model=args.model, device=str(device), dtype=dtype))
        for budget in (int(b) for b in args.budgets.split(",")):
            encoder.config = replace(encoder.config, batch_tokens=budget)
            vectors, rate = throughput(encoder, texts, device)
            cosines = (vectors * reference).sum(axis=1)
            rows.append(
                {
                    "dtype": dtype,
                    "batch_tokens": budget,
                    "tokens_per_s": rate,
                    "cosine_min": float(cosines.min()),
                    "cosine_mean": float(cosines.mean()),
                }
            )
            print(rows[-1], flush=True)
        del encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as work:
        index = index_check(args.model, str(device), args.dataset, args.docs, Path(work))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = f"{args.model} on {name} (torch {torch.__version__}), {len(texts)} {args.dataset.name} documents; "
    lines = [
        title + "cosine against CPU float32.",
        "",
        "| dtype | batch_tokens | text tokens/s | cosine min | cosine mean |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dtype']} | {r['batch_tokens']} | {r['tokens_per_s']:.0f} | {r['cosine_min']:.5f} | "
        f"{r['cosine_mean']:.5f} |"
        for r in rows
    ]
    summary = (
        f"Index on {device}: {index['documents']} documents built in {index['build_s']:.1f} s; "
        f"{index['queries']} judged queries at {index['query_ms']:.1f} ms each, "
        f"{100 * index['share_with_a_relevant_hit']:.0f}% with a relevant document in the top 10."
    )
    lines += ["", summary]
    write_report(args.out, lines, {"device": name, "torch": torch.__version__, "rows": rows, "index": index})
    return 0


if __name__ == "__main__":
    sys.exit(main())
