"""Shared fixtures: a tiny tokenizer trained on the fly, tiny random Llama / Gemma decoders (no download), and a
small corpus writer with a pipeline configuration over the tiny Llama."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

# Everything the suite loads must come from disk: a hub or dataset download would fail here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    Gemma2Config,
    Gemma2Model,
    Gemma3TextConfig,
    Gemma3TextModel,
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
)

from htp import EncoderConfig, HTPEncoder  # noqa: E402
from pipeline.config import Config  # noqa: E402

CORPUS = [
    "The cat sat on the mat. It was a sunny day in the park.",
    "Stock markets fell sharply on Tuesday after the report. Investors were worried.",
    "A library stores books, journals and records. Librarians index them by subject.",
    "Proteins fold into shapes that decide their function! Why does misfolding matter?",
] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with a few hundred tokens, trained in milliseconds."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4, max_position_embeddings=2048
)


def tiny_decoder(config_class: type, model_class: type, vocab: int, **extra) -> torch.nn.Module:
    """A randomly initialised 6-layer, 32-wide decoder of one family, seeded, in eval mode."""
    torch.manual_seed(0)
    return model_class(config_class(vocab_size=vocab, **TINY, **extra)).eval()


def tiny_llama(vocab: int) -> LlamaModel:
    return tiny_decoder(LlamaConfig, LlamaModel, vocab, num_key_value_heads=2)


FAMILIES = {
    "llama": tiny_llama,
    "gemma": lambda vocab: tiny_decoder(GemmaConfig, GemmaForCausalLM, vocab, num_key_value_heads=1, head_dim=8),
    "qwen2": lambda vocab: tiny_decoder(Qwen2Config, Qwen2Model, vocab, num_key_value_heads=2),
    "mistral": lambda vocab: tiny_decoder(
        MistralConfig, MistralModel, vocab, num_key_value_heads=2, sliding_window=None
    ),
    # a 4-token sliding window, so the local layers of Gemma 2 (alternate) and Gemma 3 (five in six) really differ
    "gemma2": lambda vocab: tiny_decoder(
        Gemma2Config, Gemma2Model, vocab, num_key_value_heads=2, head_dim=8, sliding_window=4
    ),
    "gemma3": lambda vocab: tiny_decoder(
        Gemma3TextConfig, Gemma3TextModel, vocab, num_key_value_heads=2, head_dim=8, sliding_window=4
    ),
}


@pytest.fixture(scope="session", params=list(FAMILIES))
def tiny_model(request, tiny_tokenizer):
    """Each tiny decoder family in turn (Llama, Gemma, Qwen2, Mistral, Gemma 2, Gemma 3)."""
    return FAMILIES[request.param](len(tiny_tokenizer))


@pytest.fixture
def make_encoder(tiny_model, tiny_tokenizer):
    """Build an HTPEncoder over the tiny model with config overrides."""

    def make(**overrides) -> HTPEncoder:
        settings = dict(model="tiny", method="htp", exit_layer=-2, window=(1, 4), max_length=256, batch_tokens=4096)
        settings.update(overrides)
        return HTPEncoder(EncoderConfig(**settings), model=tiny_model, tokenizer=tiny_tokenizer)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny Llama saved as a local Hugging Face folder, so configs and subprocesses can name it."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_decoder(LlamaConfig, LlamaForCausalLM, len(tiny_tokenizer), num_key_value_heads=2).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


WORDS = "library catalogue subject index journal record protein market stock park cat mat sunny report".split()


def write_corpus(path: Path, count: int, seed: int = 0) -> Path:
    """A JSON-lines corpus of `count` documents of 1-3 random six-word sentences, with titles."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for i in range(count):
            sentences = [" ".join(rng.choice(WORDS, size=6)).capitalize() + "." for _ in range(1 + i % 3)]
            f.write(json.dumps({"_id": f"d{i}", "title": f"Doc {i}", "text": " ".join(sentences)}) + "\n")
    return path


@pytest.fixture
def config(tiny_model_dir, tmp_path) -> Config:
    """The default configuration on the tiny local Llama, Flat index, small shards, an index folder in tmp."""
    base = Config()
    return replace(
        base,
        encoder=replace(base.encoder, model=str(tiny_model_dir), exit_layer=-1, window=(1, 4), device="cpu"),
        index=replace(base.index, factory="Flat", shard_size=8),
        paths=replace(base.paths, index_dir=str(tmp_path / "index")),
    )
