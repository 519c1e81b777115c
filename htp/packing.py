"""Linear layers whose weights are re-laid out once for oneDNN on CPU, so no product re-packs them per call.

torch's CPU `F.linear` hands oneDNN a plain [out, in] weight, which it re-orders into its blocked layout on
every call; for a query's few rows that copy costs about as much as the product. torch.compile's `freezing`
does the same packing, but compiles per shape; this keeps eager mode. Measured in benchmarks.packed_weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

ROWS_HINT = 32  # oneDNN picks its blocked layout for about this many rows: a query's; documents' batches gain too


def can_pack() -> bool:
    """Whether this torch build has oneDNN's packed-weight linear product (x86 and ARM CPU builds do)."""
    mkldnn = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
    )


@cache
def packed_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN packs on this CPU: float32 always, bfloat16 only where oneDNN has a bfloat16 path
    (AVX512-BW/VL/DQ or AVX-NE-CONVERT: an AVX2-only CPU refuses to re-order a bfloat16 weight), float16 never
    here (it needs AVX512-FP16), float64 never."""
    bf16 = (torch.bfloat16,) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ()
    return (torch.float32, *bf16)


class PackedLinear(nn.Linear):
    """An `nn.Linear` (same weight and bias parameters, so state dicts and dtype checks still see them) that
    also holds its weight in oneDNN's layout and multiplies with it in inference on CPU. Anywhere else (autograd
    on, another device or dtype) it is the plain product: the packed copy is only an accelerator. It is made
    again after a copy or a change of dtype; a weight changed in place afterwards is not seen: pack again."""

    def __init__(self, plain: nn.Linear) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a second weight only to drop it
        self.in_features, self.out_features = plain.in_features, plain.out_features
        self.weight, self.bias = plain.weight, plain.bias
        self.packed: tuple[torch.dtype, torch.Tensor] | None = None
        if self.weight.dtype in packed_dtypes():
            self._pack()

    def _pack(self) -> torch.Tensor:
        if self.packed is None or self.packed[0] != self.weight.dtype:
            self.packed = self.weight.dtype, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), ROWS_HINT)
        return self.packed[1]

    def __getstate__(self) -> dict:
        """Without the packed copy (oneDNN's opaque tensor has no storage to copy or pickle)."""
        return {**self.__dict__, "packed": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = torch.is_grad_enabled() or x.dtype != self.weight.dtype or x.dtype not in packed_dtypes()
        if plain or x.device.type != "cpu" or self.weight.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(flat, self._pack(), self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_linears(modules: Iterable[nn.Module]) -> int:
    """Replace every plain `nn.Linear` on the CPU of a packed dtype (packed_dtypes) inside `modules` (a model's decoder
    layers) by a PackedLinear, in place; returns how many were replaced. Packing twice replaces nothing more."""
    replaced = 0
    for module in modules:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                if child.weight.device.type == "cpu" and child.weight.dtype in packed_dtypes():
                    setattr(parent, name, PackedLinear(child))
                    replaced += 1
    return replaced
