"""What a command that loads the model pays before and after its work, in fresh processes, variants alternating:
loading the default model's tokenizer through AutoTokenizer (its GemmaTokenizer class) against reading the
de-quantised folder's tokenizer.json as `load_model` does; the interpreter's exit after the encoder has loaded, as
it was and with the objects frozen as `htp` now exits; and a whole `htp query` against an index.

    python -m benchmarks.cold_start [--index out/sample-index] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness.report import write_report

TOKENIZERS = {
    "AutoTokenizer (GemmaTokenizer)": "from transformers import AutoTokenizer as T; T.from_pretrained(folder)",
    "tokenizer.json (load_model)": "from htp.models import _saved_tokenizer as T; T(folder)",
}
EXITS = {"plain exit": "pass", "gc.freeze() (htp's exit)": "import gc; gc.freeze()"}


def child(code: str) -> tuple[float, float]:
    """Run `code` in a new Python; it prints a time.time() stamp last. Returns (the seconds it printed before the stamp,
    the seconds from the stamp to the process's end)."""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    ended = time.time()
    *head, stamp = done.stdout.split()
    return (float(head[0]) if head else 0.0), ended - float(stamp)


def tokenizer_code(load: str) -> str:
    return (
        "import time\nfrom pathlib import Path\nfrom htp.models import resolve_model_source\n"
        "folder = Path(resolve_model_source('gemma3-270m'))\nimport transformers\n"
        f"began = time.perf_counter()\n{load}\nprint(time.perf_counter() - began)\nprint(time.time())"
    )


def exit_code(ending: str) -> str:
    return (
        "import time\nfrom pipeline.config import Config\nfrom htp import HTPEncoder\n"
        "HTPEncoder(Config.load('config.yaml').encoder).encode(['warm up'], kind='query')\n"
        f"{ending}\nprint(time.time())"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_start.md"))
    args = parser.parse_args(argv)
    if not args.index.is_dir():
        raise SystemExit(f"no index at {args.index}: build one first (`make demo` builds out/sample-index)")
    htp = str(Path(sys.executable).with_name("htp"))
    timings: dict[str, list[float]] = {name: [] for name in (*TOKENIZERS, *EXITS, "htp query")}
    for _ in range(args.repeats):
        for name, load in TOKENIZERS.items():
            timings[name].append(child(tokenizer_code(load))[0])
        for name, ending in EXITS.items():
            timings[name].append(child(exit_code(ending))[1])
        began = time.perf_counter()
        subprocess.run(
            [htp, "query", str(args.index), "read and write compressed archives"], check=True, capture_output=True
        )
        timings["htp query"].append(time.perf_counter() - began)
    medians = {name: statistics.median(seconds) for name, seconds in timings.items()}
    lines = [
        f"Fresh processes, variants alternating, medians of {args.repeats} (seconds). Tokenizer: the load alone, "
        "transformers already imported. Exit: from the last line of a process whose encoder has loaded and encoded "
        f"once to the process's end. `htp query`: the whole command against {args.index}, hybrid, as a user runs it.",
        "",
        "| step | variant | median s |",
        "|---|---|---|",
        *(f"| tokenizer | {name} | {medians[name]:.2f} |" for name in TOKENIZERS),
        *(f"| exit | {name} | {medians[name]:.2f} |" for name in EXITS),
        f"| whole command | `htp query` | {medians['htp query']:.2f} |",
    ]
    write_report(args.out, lines, {"repeats": args.repeats, "seconds": timings, "medians": medians})


if __name__ == "__main__":
    main()
