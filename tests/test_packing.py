"""Linear weights packed once for oneDNN: the same products as torch's plain linear, the plain path wherever the
packed one does not apply, and the same vectors from an encoder with and without packing."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from htp import EncoderConfig, HTPEncoder, packing
from htp.packing import PackedLinear, can_pack, pack_linears, packed_dtypes

pytestmark = pytest.mark.skipif(not can_pack(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_product_equals_the_plain_one(dtype, tolerance, bias):
    torch.manual_seed(0)
    plain = nn.Linear(64, 96, bias=bias).to(dtype)
    packed = PackedLinear(plain)
    wide = torch.randn(5, 128).to(dtype)[:, ::2]  # a strided, non-contiguous view
    shapes = [(64,), (0, 64), (1, 64), (22, 64), (3, 7, 64), (2, 3, 5, 64)]
    for x in [wide, *(torch.randn(shape).to(dtype) for shape in shapes)]:
        with torch.inference_mode():
            expected, got = plain(x), packed(x)
        assert got.shape == expected.shape and got.dtype == dtype
        if expected.numel():
            assert (got.float() - expected.float()).abs().max() <= tolerance * expected.float().abs().max()


def test_packing_replaces_plain_linears_once_and_keeps_the_parameters():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4, bias=False)))
    weights = [model[0].weight, model[2][0].weight]
    assert pack_linears([model]) == 2 and pack_linears([model]) == 0
    assert isinstance(model[0], PackedLinear) and isinstance(model[2][0], PackedLinear)
    assert [model[0].weight, model[2][0].weight] == weights and model[2][0].bias is None
    assert len(model.state_dict()) == 3  # the packed copy is not a parameter or buffer


def test_dtypes_onednn_cannot_pack_stay_plain():
    model = nn.Sequential(nn.Linear(8, 4).half(), nn.Linear(4, 4).double(), nn.Linear(4, 2))
    assert pack_linears([model]) == 1 and [type(m) for m in model] == [nn.Linear, nn.Linear, PackedLinear]
    halved = copy.deepcopy(model[2]).half()  # packed, then converted to a dtype it cannot be packed in
    x = torch.randn(3, 4).half()
    with torch.inference_mode():
        assert torch.equal(halved(x), torch.nn.functional.linear(x, halved.weight, halved.bias))


def test_autograd_another_dtype_and_copies_take_a_correct_path():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 8))
    x = torch.randn(4, 32)
    with torch.inference_mode():
        expected = model(x)
    pack_linears([model])
    out = model(x)  # autograd on: the plain product, which has a gradient
    out.sum().backward()
    assert model[0].weight.grad is not None and torch.allclose(out, expected, atol=1e-6)
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.inference_mode():
            assert torch.allclose(copied(x), expected, atol=1e-5)
    halved = copy.deepcopy(model).to(torch.bfloat16)  # packed again in the new dtype on first use
    with torch.inference_mode():
        got = halved(x.bfloat16())
    repacked = halved[0].packed is not None and halved[0].packed[0] == torch.bfloat16
    assert got.dtype == torch.bfloat16 and repacked == (torch.bfloat16 in packed_dtypes())
    assert (got.float() - expected).abs().max() < 0.05


def test_a_cpu_without_onednns_bfloat16_path_keeps_bfloat16_products_plain(monkeypatch):
    """An AVX2-only CPU: oneDNN refuses to re-order a bfloat16 weight, so bfloat16 layers are never packed."""
    monkeypatch.setattr(packing, "packed_dtypes", lambda: (torch.float32,))
    model = nn.Sequential(nn.Linear(8, 4).bfloat16(), nn.Linear(4, 2))
    assert pack_linears([model]) == 1 and [type(m) for m in model] == [nn.Linear, PackedLinear]
    direct = PackedLinear(nn.Linear(8, 4).bfloat16())
    x = torch.randn(3, 8).bfloat16()
    with torch.inference_mode():
        assert torch.equal(direct(x), torch.nn.functional.linear(x, direct.weight, direct.bias))
    assert direct.packed is None


def unpacked_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with plain `nn.Linear` layers (same weights) wherever a PackedLinear stands."""
    copied = copy.deepcopy(model)
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
    return copied


@pytest.mark.parametrize("method", ["vanilla-mean", "htp"])
def test_an_encoder_with_packed_weights_gives_the_unpacked_vectors(tiny_model, tiny_tokenizer, method):
    texts = ["The cat sat on the mat. It was sunny.", "Stock market report. Prices rose sharply. Then fell."]
    settings = dict(model="tiny", method=method, exit_layer=-2, window=(1, 4), max_length=256)
    plain_model, packed_model = unpacked_copy(tiny_model), unpacked_copy(tiny_model)  # earlier tests packed it
    plain = HTPEncoder(EncoderConfig(**settings, pack_weights=False), model=plain_model, tokenizer=tiny_tokenizer)
    packed = HTPEncoder(EncoderConfig(**settings), model=packed_model, tokenizer=tiny_tokenizer)
    kinds = [type(module) for module in packed.layers[: packed.layers_run].modules() if isinstance(module, nn.Linear)]
    assert kinds and set(kinds) == {PackedLinear}
    assert not any(isinstance(module, PackedLinear) for module in packed.layers[packed.layers_run :].modules())
    assert not any(isinstance(module, PackedLinear) for module in plain_model.modules())
    for kind in ("document", "query"):
        assert np.abs(plain.encode(texts, kind=kind) - packed.encode(texts, kind=kind)).max() < 1e-5
