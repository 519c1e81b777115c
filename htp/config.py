"""Encoder configuration: what the `encoder:` section of config.yaml holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

METHODS = ("vanilla-last", "vanilla-mean", "echo", "tp", "htp")
BLOCK_MODES = ("sentences", "tokens", "adaptive")
KINDS = ("document", "query")


@dataclass(frozen=True)
class EncoderConfig:
    """Every knob of the encoder; `None` means "take the model's default from the registry"."""

    model: str = "smollm2-135m"
    method: str = "htp"
    exit_layer: int | None = None
    window: tuple[int, int] | None = None
    final_norm: bool | None = None
    block_mode: str = "sentences"
    sentences_per_block: int = 1
    block_tokens: int = 32
    max_blocks: int = 64
    spacy_model: str = "sentencizer"
    max_length: int = 512
    batch_tokens: int = 16384
    max_batch_size: int = 64
    max_padding: float = 0.05
    query_prompt: str | None = None
    document_prompt: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"encoder.method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.block_mode not in BLOCK_MODES:
            raise ValueError(f"encoder.block_mode {self.block_mode!r} is not one of {', '.join(BLOCK_MODES)}")
        if self.window is not None:
            window = tuple(int(v) for v in self.window)
            if len(window) != 2 or window[0] < 0 or window[1] < window[0]:
                raise ValueError(f"encoder.window must be [start, stop) with 0 <= start <= stop, got {self.window!r}")
            object.__setattr__(self, "window", window)
        for name in ("sentences_per_block", "block_tokens", "max_blocks", "batch_tokens", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_padding <= 1:
            raise ValueError(f"encoder.max_padding must be in [0, 1], got {self.max_padding}")
        if self.max_length < 8:
            raise ValueError(f"encoder.max_length must be >= 8, got {self.max_length}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderConfig":
        """Build from a mapping (config.yaml's `encoder:`), refusing unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown encoder keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for manifests and hashing (window as a list)."""
        out = asdict(self)
        if out["window"] is not None:
            out["window"] = list(out["window"])
        return out
