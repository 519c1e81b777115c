"""Why a lone query's forward pass is slow, and what would speed it: the default model's MLP product
([rows x 640] x [640 x 2048]) timed in float32, bfloat16 and int8 dynamic quantisation, for a lone query's
rows (22 positions: bound by reading the weights) and a document batch's (352 rows: bound by arithmetic).

    python -m benchmarks.linear_kernels
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.harness.report import write_report

IN, OUT = 640, 2048  # Gemma 3 270M's MLP up/gate projection
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "int8 dynamic": 1}  # per weight, as each kernel stores it


def microseconds(run: Callable[[], object], repeats: int) -> float:
    """Median microseconds of one call, over `repeats` rounds of 20 calls after a warm-up."""
    for _ in range(20):
        run()
    rounds = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(20):
            run()
        rounds.append((time.perf_counter() - began) / 20 * 1e6)
    return statistics.median(rounds)


def kernels(rows: int, repeats: int) -> dict[str, float]:
    """Median microseconds of the product per kernel, all on the same random weights and inputs."""
    torch.manual_seed(0)
    x = torch.randn(rows, IN)
    linear = torch.nn.Linear(IN, OUT, bias=False).eval()
    half = torch.nn.Linear(IN, OUT, bias=False).to(torch.bfloat16).eval()
    half.weight.data = linear.weight.data.to(torch.bfloat16)
    # quantize_dynamic is torch's own int8 linear (fbgemm/oneDNN); torchao's replacement is not installed here
    int8 = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
    xb = x.to(torch.bfloat16)
    with torch.inference_mode():
        return {
            "float32": microseconds(lambda: linear(x), repeats),
            "bfloat16": microseconds(lambda: half(xb), repeats),
            "int8 dynamic": microseconds(lambda: int8(x), repeats),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/linear_kernels.md"))
    args = parser.parse_args(argv)
    results = {rows: kernels(rows, args.repeats) for rows in (22, 352)}
    names = list(results[22])
    lines = [
        f"[rows x {IN}] x [{IN} x {OUT}] products, median microseconds ({torch.get_num_threads()} torch threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}); weight read rate in GB/s of each kernel's "
        "own weight bytes.",
        "",
        "| rows | " + " | ".join(names) + " | bfloat16 vs float32 | int8 vs bfloat16 |",
        "|---" * (len(names) + 3) + "|",
    ]
    for rows, timings in results.items():
        cells = " | ".join(f"{timings[name]:.0f}" for name in names)
        lines.append(
            f"| {rows} | {cells} | {timings['float32'] / timings['bfloat16']:.2f}x "
            f"| {timings['bfloat16'] / timings['int8 dynamic']:.2f}x |"
        )
    rates = {name: IN * OUT * WEIGHT_BYTES[name] / results[22][name] / 1e3 for name in names}
    lines += ["", "Weight read rate at 22 rows: " + ", ".join(f"{n} {r:.1f} GB/s" for n, r in rates.items())]
    write_report(args.out, lines, {"rows": results, "weight_gb_per_s_at_22_rows": rates})


if __name__ == "__main__":
    main()
