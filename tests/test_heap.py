"""htp.heap: with freed memory kept, a repeated large allocation stops page-faulting (checked in fresh processes,
since the setting is process-wide)."""

from __future__ import annotations

import subprocess
import sys

ALLOCATE = """
import resource, sys
import torch
from htp.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.ones(8, 1024, 1024)  # 32 MB, above glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    y = x * 2  # two fresh 32 MB buffers each time, as a forward pass's activations come and go
    z = y + 1
    del y, z
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", ALLOCATE, mode], capture_output=True, text=True, check=True)
    kept, count = out.stdout.split()
    return kept, int(count)


def test_kept_memory_is_reused_instead_of_faulted_in_again():
    page = 4096
    buffer_pages = 8 * 1024 * 1024 * 4 // page
    plain_kept, plain = faults("plain")
    kept, reused = faults("keep")
    assert plain_kept == "False" and kept == "True"
    assert plain >= 39 * 2 * buffer_pages  # every product faulted its buffer in anew
    # the heap grows while the first buffers settle (up to about 7 buffers' worth seen), then its pages are reused
    assert reused * 4 <= plain


def test_the_encoder_keeps_freed_memory_on_cpu_unless_told_not_to(monkeypatch, make_encoder):
    from htp import encoder as encoder_module

    calls: list[bool] = []
    monkeypatch.setattr(encoder_module, "keep_freed_memory", lambda: calls.append(True) or True)
    make_encoder(device="cpu")
    make_encoder(device="cpu", reuse_memory=False)
    assert calls == [True]


def test_a_loading_encoder_keeps_freed_memory_before_the_weights_load(monkeypatch, tiny_model, tiny_tokenizer):
    """Set after the weights are in, the heap may have no room left to grow in place and the setting did nothing
    (measured: the faults and peak memory of an encoder without it)."""
    from htp import EncoderConfig, HTPEncoder
    from htp import encoder as encoder_module

    order: list[str] = []
    monkeypatch.setattr(encoder_module, "keep_freed_memory", lambda: order.append("keep") or True)
    monkeypatch.setattr(
        encoder_module, "load_model", lambda *args: order.append("load") or (tiny_model, tiny_tokenizer)
    )
    HTPEncoder(EncoderConfig(model="tiny", method="htp", exit_layer=-2, window=(1, 4), device="cpu"))
    assert order[:2] == ["keep", "load"]
