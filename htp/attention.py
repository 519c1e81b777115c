"""Attention on CPU in bfloat16 as two batched matrix products and a float32 softmax, registered with transformers'
attention interface.

torch's CPU flash-attention kernel runs bfloat16 no faster than float32 (a 16 x 512-position Gemma 3 batch: 96 ms
either way), while oneDNN's bfloat16 products run several times faster: the products path takes 36 ms there
(benchmarks.attention). Every query head that shares a key/value head is folded into the rows of one product, so
grouped-query attention needs no repeated keys. Anything else (float32, a GPU, dropout, float masks) goes to
transformers' SDPA path unchanged, so only models that attend with SDPA are switched.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "htp_products"
FAST_DTYPES = (torch.bfloat16, torch.float16)
SCORES_BYTES = 256 << 20  # float32 scores held at once: longer batches are done a few sequences at a time


def product_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention contract: query [b, heads, q, d], key and value [b, kv_heads, k, d], a boolean mask
    [b, 1, q, k] (True attends) or None for plain causal attention; returns [b, q, heads, d]."""
    rows, heads, length, depth = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    plain_causal = attention_mask is None and (length == keys or length == 1)
    usable = attention_mask is not None and attention_mask.dtype == torch.bool
    if (
        query.device.type != "cpu"
        or query.dtype not in FAST_DTYPES
        or dropout
        or kwargs.get("softcap") is not None
        or kwargs.get("position_bias") is not None
        or not (usable or plain_causal)
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scale = scaling if scaling is not None else depth**-0.5
    if attention_mask is None:  # causal over equal lengths (a lone position sees everything)
        attention_mask = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril(keys - length)[None, None]
    attention_mask = attention_mask.expand(rows, 1, length, keys)  # a mask may leave the batch to broadcasting
    groups = heads // kv_heads
    folded = query.reshape(rows, kv_heads, groups * length, depth)  # heads sharing a key/value head stacked as rows
    hidden = ~attention_mask[:, :, None]  # [b, 1, 1, q, k], broadcast over kv heads and groups
    step = max(1, SCORES_BYTES // (4 * heads * length * keys))
    out = torch.empty(rows, kv_heads, groups * length, depth, dtype=query.dtype, device=query.device)
    for a in range(0, rows, step):
        b = min(a + step, rows)
        scores = torch.matmul(folded[a:b], key[a:b].transpose(-1, -2)).float()
        scores = scores.view(b - a, kv_heads, groups, length, keys).mul_(scale)
        scores.masked_fill_(hidden[a:b], torch.finfo(torch.float32).min)  # a row with nothing to see stays finite
        weights = torch.softmax(scores, dim=-1).to(value.dtype).view(b - a, kv_heads, groups * length, keys)
        torch.matmul(weights, value[a:b], out=out[a:b])
    return out.view(rows, heads, length, depth).transpose(1, 2).contiguous(), None


def use_product_attention(model: PreTrainedModel, on: bool = True) -> None:
    """Make `model` (and every sub-model sharing its config) attend with `product_attention`, masks made as for
    SDPA, when it attends with SDPA now (eager models, such as soft-capped ones, are left alone); `on=False` puts
    SDPA back. In place, on the shared model object."""
    current = model.config._attn_implementation
    if on and current == "sdpa":
        AttentionInterface.register(NAME, product_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
        model.set_attn_implementation(NAME)
    elif not on and current == NAME:
        model.set_attn_implementation("sdpa")
