"""htp.attention: the bfloat16 products path equals SDPA (grouped heads, masks, causal, a batch done in pieces), other
cases keep SDPA's own path, and an encoder over each tiny decoder family gives SDPA's vectors with it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from htp import EncoderConfig, HTPEncoder, attention
from htp.attention import product_attention

ROWS, HEADS, KV_HEADS, DEPTH = 3, 4, 2, 16


class Module(torch.nn.Module):
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


def reference(query, key, value, mask):
    """SDPA in float32 on repeated keys, [b, q, heads, d] as transformers' attention returns it."""
    repeat = HEADS // KV_HEADS
    key, value = key.float().repeat_interleave(repeat, 1), value.float().repeat_interleave(repeat, 1)
    out = F.scaled_dot_product_attention(query.float(), key, value, attn_mask=mask, is_causal=mask is None)
    return out.transpose(1, 2)


def tensors(length: int, keys: int, dtype=torch.bfloat16):
    torch.manual_seed(0)
    return (
        torch.randn(ROWS, HEADS, length, DEPTH).to(dtype),
        torch.randn(ROWS, KV_HEADS, keys, DEPTH).to(dtype),
        torch.randn(ROWS, KV_HEADS, keys, DEPTH).to(dtype),
    )


@pytest.mark.parametrize("pieces", [False, True])
def test_products_equal_sdpa_causal_and_masked(monkeypatch, pieces):
    if pieces:  # room for one sequence's scores at a time
        monkeypatch.setattr(attention, "SCORES_BYTES", 4 * HEADS * 7 * 7)
    query, key, value = tensors(7, 7)
    out, _ = product_attention(Module(), query, key, value, None)
    assert out.dtype == torch.bfloat16 and out.shape == (ROWS, 7, HEADS, DEPTH)
    assert (out.float() - reference(query, key, value, None)).abs().max() < 0.03
    # a cached head of 3 positions before 4 new ones, the last row's final 2 positions hidden (padding-like)
    query, key, value = tensors(4, 7)
    mask = torch.ones(4, 7, dtype=torch.bool).tril(3)[None, None].repeat(ROWS, 1, 1, 1)
    mask[-1, :, :, -2:] = False
    out, _ = product_attention(Module(), query, key, value, mask)
    assert (out.float() - reference(query, key, value, mask)).abs().max() < 0.03


def test_float32_and_unequal_lengths_without_a_mask_take_sdpa(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *args, **kwargs: calls.append(1) or (None, None))
    product_attention(Module(), *tensors(5, 5, torch.float32), None)
    product_attention(Module(), *tensors(4, 7), None)  # a cache without a mask: SDPA's own alignment rules
    product_attention(Module(), *tensors(5, 5), None, dropout=0.1)
    assert calls == [1, 1, 1]


def test_an_encoder_in_bfloat16_gives_sdpa_vectors(tiny_model, tiny_tokenizer):
    texts = ["The cat sat on the mat. It was sunny.", "Stock market report. Prices rose sharply. Then fell."]
    settings = dict(model="tiny", method="htp", exit_layer=-2, window=(1, 4), max_length=256)
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    vectors = {}
    for on in (False, True):
        encoder = HTPEncoder(EncoderConfig(**settings, attention_products=on), model=model, tokenizer=tiny_tokenizer)
        switched = model.config._attn_implementation == attention.NAME
        assert switched == (on and model.config._attn_implementation != "eager")
        vectors[on] = np.concatenate([encoder.encode(texts, kind=kind) for kind in ("document", "query")])
    cosine = (vectors[False] * vectors[True]).sum(axis=1)
    assert cosine.min() > 0.999
