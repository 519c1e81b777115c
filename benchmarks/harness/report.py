"""One report writer: a benchmark's table as Markdown and its figures as JSON, both stamped with the command,
date, machine and commit that produced them (so a figure quoted anywhere can be traced and re-made)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path


def cpu_name() -> str:
    """This machine's CPU model as /proc/cpuinfo names it (benchmarks say which CPU their figures come from)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # what decides the encoder's dtype and kernels here


def cpu_flags() -> str:
    """The CPU features among FLAGS this machine has, e.g. "avx512_bf16, avx512f, avx2" (the CPU model name alone
    does not tell an AVX2-only EPYC from one with AVX512-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown features"
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return ", ".join(flag for flag in FLAGS if flag in have) or "none of " + ", ".join(FLAGS)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def provenance() -> dict[str, str]:
    """The command (as `python -m benchmarks.NAME ...`), UTC date, machine and commit of this run; a commit with
    uncommitted changes beside it is marked `+changes`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else f"python {sys.argv[0]}"
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    return {
        "command": " ".join([program, *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_name()} ({cpu_flags()}), {os.cpu_count()} cores",
        "commit": commit,
    }


def write_report(out: Path, lines: list[str], data: object) -> None:
    """Write `lines` to out (.md) and `data` to out with a .json suffix, each with this run's provenance, then
    print the lines."""
    stamp = provenance()
    out.parent.mkdir(parents=True, exist_ok=True)
    footer = ["", f"Made by `{stamp['command']}` on {stamp['date']}, {stamp['machine']}, at commit {stamp['commit']}."]
    out.write_text("\n".join(lines + footer) + "\n")
    record = {**data, "provenance": stamp} if isinstance(data, dict) else {"results": data, "provenance": stamp}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print("\n".join(lines + footer))
