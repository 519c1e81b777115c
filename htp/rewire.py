"""Layer rewiring with forward pre-hooks, and early exit, on any decoder whose layers take hidden states first."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Copies:
    """Flattened (batch row, destination, source) index triples for one batch; applied in this order."""

    rows: torch.Tensor
    pst: torch.Tensor
    ends: torch.Tensor
    bpst_rows: torch.Tensor
    bpst: torch.Tensor
    bpst_src: torch.Tensor

    def apply(self, h: torch.Tensor) -> None:
        """h[PST_m] <- h[end_m], then h[B-PST_m] <- h[PST_m], for every row and block at once (in place)."""
        if self.rows.numel():
            h[self.rows, self.pst] = h[self.rows, self.ends]
        if self.bpst_rows.numel():
            h[self.bpst_rows, self.bpst] = h[self.bpst_rows, self.bpst_src]


class EarlyExit(Exception):
    """Raised by the exit layer's hook to stop the forward pass: later layers are not run at all."""


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _output_hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # older transformers return (hidden, ...)


@contextmanager
def rewired(
    layers: nn.ModuleList,
    window: tuple[int, int] | None,
    copies: Copies | None,
    exit_after: int,
    taps: dict[int, Callable[[torch.Tensor], None]] | None = None,
) -> Iterator[None]:
    """Install the copy hooks on layers [start, stop), taps on chosen layer outputs, and the early exit.

    `exit_after` is the number of decoder layers to run; the forward raises EarlyExit carrying their output.
    `taps[i]` sees the output of layer i (0-based) and is used to read several exit layers in one pass.
    """
    handles = []

    def copy_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        assert copies is not None  # installed only when there are copies to make
        copies.apply(_hidden_of(args, kwargs))

    def exit_hook(_module: nn.Module, _args: tuple, output: object) -> None:
        raise EarlyExit()

    try:
        if window is not None and copies is not None:
            for index in range(window[0], min(window[1], exit_after)):
                handles.append(layers[index].register_forward_pre_hook(copy_hook, with_kwargs=True))
        for index, tap in (taps or {}).items():
            handles.append(layers[index].register_forward_hook(lambda _m, _a, out, tap=tap: tap(_output_hidden(out))))
        handles.append(layers[exit_after - 1].register_forward_hook(exit_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
