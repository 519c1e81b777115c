"""Attention alone at a document batch's shape: transformers' SDPA call (keys repeated per head, a boolean causal
mask) against htp.attention's two products in bfloat16, and SDPA in float32, alternating, medians; and each one's
largest difference from float32 SDPA.

    python -m benchmarks.attention --rows 16 --length 512 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.harness.report import cpu_name, write_report
from benchmarks.harness.timing import alternating
from htp.attention import product_attention
from htp.heap import keep_freed_memory


class Gemma3Heads(torch.nn.Module):
    """The attention shape of Gemma 3 270M: 4 query heads sharing 1 key/value head of 256."""

    num_key_value_groups = 4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention.md"))
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the encoder runs
    torch.manual_seed(0)
    shape = (args.rows, 1, args.length, 256)
    query = torch.randn(args.rows, 4, args.length, 256)
    key, value = torch.randn(shape), torch.randn(shape)
    mask = torch.ones(args.length, args.length, dtype=torch.bool).tril()[None, None].expand(args.rows, 1, -1, -1)
    with torch.inference_mode():
        exact = F.scaled_dot_product_attention(query, key.expand(-1, 4, -1, -1), value.expand(-1, 4, -1, -1), mask)
        results = {}
        for dtype in (torch.bfloat16, torch.float32):
            q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
            paths = {
                "sdpa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(
                    q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), mask
                ),
                "products": lambda q=q, k=k, v=v: product_attention(Gemma3Heads(), q, k, v, mask)[0].transpose(1, 2),
            }
            if dtype == torch.float32:  # the products path hands float32 to SDPA itself
                del paths["products"]
            times = alternating(paths, args.rounds)
            for name, run in paths.items():
                results[f"{name} {str(dtype).removeprefix('torch.')}"] = {
                    "ms": 1000 * statistics.median(times[name]),
                    "max_difference_from_float32_sdpa": float((run().float() - exact).abs().max()),
                }
    lines = [
        f"Attention of {args.rows} x {args.length} positions, 4 query heads over 1 key/value head of 256 (Gemma 3 "
        f"270M), causal, on {cpu_name()}, {torch.get_num_threads()} threads; medians of {args.rounds} alternating "
        "rounds (in float32 the products path hands the work to SDPA, so SDPA alone is timed).",
        "",
        "| path | ms | largest difference from float32 SDPA |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['ms']:.1f} | {r['max_difference_from_float32_sdpa']:.4f} |" for name, r in results.items()
    ]
    write_report(args.out, lines, results)


if __name__ == "__main__":
    main()
