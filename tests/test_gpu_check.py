"""benchmarks/gpu_check.py: without a GPU it says so and stops; its CPU half (every step on the CPU) runs here on the
tiny model, so the script keeps working for the machines that have one."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run for real")
def test_without_a_gpu_it_says_so_and_exits_at_once(capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "gpu.md")]) == 2
    assert "no CUDA GPU here" in capsys.readouterr().err
    assert not (tmp_path / "gpu.md").exists()


def test_the_cpu_half_measures_compares_and_builds(tiny_model_dir, tmp_path):
    out = tmp_path / "gpu.md"
    assert (
        gpu_check.main(
            [
                "--device",
                "cpu",
                "--model",
                str(tiny_model_dir),
                "--docs",
                "24",
                "--budgets",
                "2048,8192",
                "--dtypes",
                "float32,bfloat16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["dtype"], r["batch_tokens"]): r for r in report["rows"]}
    assert set(rows) == {("float32", 2048), ("float32", 8192), ("bfloat16", 2048), ("bfloat16", 8192)}
    assert rows[("float32", 2048)]["cosine_min"] > 0.9999 and rows[("bfloat16", 8192)]["cosine_min"] > 0.95
    assert all(r["tokens_per_s"] > 0 for r in rows.values())
    assert report["index"]["documents"] == 24 and report["index"]["queries"] > 0
    assert "| bfloat16 | 8192 |" in out.read_text()
