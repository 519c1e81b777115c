"""Encoding speed of htp against vanilla-mean on real documents, side by side in one run, per model and dtype.

Same model, same exit layer, same batch budget; runs alternate (vanilla, htp, htp, vanilla, ...) and the
medians are reported: real-text tokens/s and documents/s, HTP's ratio to vanilla, padding waste, peak RSS, the
model's achieved FLOP/s against a torch matmul of the same dtype measured in the same process, and where the
time goes (torch.profiler's top operators over one HTP pass).

    python -m benchmarks.encode_speed --dataset ../shared/data/cisi --docs 300 --repeats 3 \
        --models gemma3-270m,smollm2-135m --dtypes float32,bfloat16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from benchmarks.harness.report import write_report
from htp import EncoderConfig, HTPEncoder
from htp.batching import token_budget_batches
from htp.models import DTYPES, load_model, pick_device
from pipeline.records import full_text


def matmul_flops(dtype: torch.dtype = torch.float32, seconds: float = 3.0, size: int = 2048) -> float:
    """FLOP/s of a square matmul in `dtype`, the machine's practical peak for dense math in it."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    runs, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - began)


def model_flops(encoder: HTPEncoder, layer_count: int, widths: list[tuple[int, int]]) -> float:
    """FLOPs the decoder layers compute for batches of (rows, padded width): 2 x weights per position,
    plus causal attention (QK^T and AV over the lower triangle)."""
    per_layer = sum(p.numel() for p in encoder.layers[0].parameters() if p.dim() == 2)
    heads_dim = encoder.model.config.num_attention_heads * getattr(
        encoder.model.config, "head_dim", encoder.dimension // encoder.model.config.num_attention_heads
    )
    total = 0.0
    for rows, width in widths:
        total += rows * (2 * per_layer * width + 2 * heads_dim * width * (width + 1)) * layer_count
    return total


def timed_encode(encoder: HTPEncoder, texts: list[str]) -> dict:
    """One pass: seconds, real text tokens, padding waste, and the padded batch shapes it ran."""
    before = (encoder.stats.text_tokens, encoder.stats.sequence_tokens, encoder.stats.computed_positions)
    layouts = encoder.layouts(texts)
    lengths = [len(layout.ids) for layout in layouts]
    batches = token_budget_batches(
        lengths, encoder.config.batch_tokens, encoder.config.max_batch_size, encoder.config.max_padding
    )
    widths = [(len(b), max(lengths[i] for i in b)) for b in batches]
    began = time.perf_counter()
    encoder.encode(texts, show_progress=False)
    seconds = time.perf_counter() - began
    text_tokens = encoder.stats.text_tokens - before[0]
    sequence = encoder.stats.sequence_tokens - before[1]
    computed = encoder.stats.computed_positions - before[2]
    return {
        "seconds": seconds,
        "text_tokens": text_tokens,
        "tokens_per_s": text_tokens / seconds,
        "padding_waste": 1 - sequence / computed,
        "flops": model_flops(encoder, encoder.layers_run, widths),
    }


def profile_top(encoder: HTPEncoder, texts: list[str], rows: int = 8) -> list[dict]:
    """The operators that take the most self CPU time over one encode of `texts`, with their share."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        encoder.encode(texts, show_progress=False)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:rows]]


def measure(name: str, dtype: torch.dtype, texts: list[str], args: argparse.Namespace) -> dict:
    """Both methods on one loaded model in one dtype, alternating, medians of the repeats."""
    model, tokenizer = load_model(name, pick_device("cpu"), dtype)
    encoders = {
        m: HTPEncoder(
            EncoderConfig(
                model=name,
                method=m,
                exit_layer=args.exit_layer,
                batch_tokens=args.batch_tokens,
                max_padding=args.max_padding,
            ),
            model,
            tokenizer,
        )
        for m in ("vanilla-mean", "htp")
    }
    encoders["htp"].encode(texts[:8])  # warm-up of spaCy and kernels
    runs: dict[str, list[dict]] = {m: [] for m in encoders}
    for repeat in range(args.repeats):
        order = ["vanilla-mean", "htp"] if repeat % 2 == 0 else ["htp", "vanilla-mean"]
        for method in order:
            runs[method].append(timed_encode(encoders[method], texts))
            print(
                f"{name} {dtype} repeat {repeat} {method}: {runs[method][-1]['tokens_per_s']:.0f} text tokens/s",
                flush=True,
            )
    peak = matmul_flops(dtype)
    summary: dict = {"matmul_flops": peak, "exit_layer": encoders["htp"].layers_run}
    for method, results in runs.items():
        flops = statistics.median(r["flops"] / r["seconds"] for r in results)
        summary[method] = {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in results),
            "docs_per_s": statistics.median(len(texts) / r["seconds"] for r in results),
            "padding_waste": statistics.median(r["padding_waste"] for r in results),
            "achieved_flops": flops,
            "share_of_matmul": flops / peak,
        }
    summary["htp_over_vanilla"] = summary["htp"]["tokens_per_s"] / summary["vanilla-mean"]["tokens_per_s"]
    summary["profile"] = profile_top(encoders["htp"], texts[: max(16, len(texts) // 4)])
    return {"summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cisi"))
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--exit-layer", type=int, default=None, help="default: each model's registry default")
    parser.add_argument("--batch-tokens", type=int, default=EncoderConfig().batch_tokens)
    parser.add_argument("--max-padding", type=float, default=EncoderConfig().max_padding)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encode_speed.md"))
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in (args.dataset / "corpus.jsonl").read_text().splitlines()[: args.docs]]
    texts = [full_text(r.get("title"), r["text"]) for r in rows]
    results = {}
    for name in args.models.split(","):
        for dtype_name in args.dtypes.split(","):
            results[f"{name} {dtype_name}"] = measure(name, DTYPES[dtype_name], texts, args)
    setup = {
        "docs": len(texts),
        "repeats": args.repeats,
        "batch_tokens": args.batch_tokens,
        "max_padding": args.max_padding,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    lines = []
    first = next(iter(results))
    lines.append(
        f"| model, dtype | method | text tokens/s (median of {args.repeats}) | documents/s | vs {first} htp | "
        "padding waste | achieved GFLOP/s | share of this dtype's matmul |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    base = results[first]["summary"]["htp"]["docs_per_s"]
    for key, result in results.items():
        for method in ("vanilla-mean", "htp"):
            s = result["summary"][method]
            lines.append(
                f"| {key} | {method} | {s['tokens_per_s']:.0f} | {s['docs_per_s']:.2f} | "
                f"{s['docs_per_s'] / base:.2f}x | {100 * s['padding_waste']:.1f}% | "
                f"{s['achieved_flops'] / 1e9:.1f} | {100 * s['share_of_matmul']:.0f}% |"
            )
    for key, result in results.items():
        s = result["summary"]
        top = ", ".join(f"{e['op'].removeprefix('aten::')} {100 * e['share']:.0f}%" for e in s["profile"][:5])
        lines.append(
            f"\n{key}: htp / vanilla-mean {s['htp_over_vanilla']:.3f}; matmul {s['matmul_flops'] / 1e9:.0f} GFLOP/s; "
            f"exit layer {s['exit_layer']}; profile: {top}"
        )
    lines.append(f"\npeak RSS {setup['peak_rss_mb']:.0f} MB; {len(texts)} docs")
    write_report(args.out, lines, {"setup": setup, "results": results})


if __name__ == "__main__":
    main()
