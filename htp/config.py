"""Encoder configuration: what the `encoder:` section of config.yaml holds."""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from htp.errors import EncoderValueError
from htp.registry import defaults_for, layer_count


@dataclass(frozen=True)
class Method:
    """What a method's name means, in the one place it is interpreted: how the text is laid out, where its blocks
    come from, whether layers are rewired, and how the vectors are read out."""

    layout: str  # plain: the text once | echo: the text twice, pool the second copy | prepend: <PST> before blocks
    blocks: str  # none | whole (one block: the text) | segmented (sentences, token intervals, adaptive)
    rewired: bool  # copy block ends into placeholders between layers
    pooling: str  # mean over the text's own tokens | last token


METHOD_TABLE: dict[str, Method] = {
    "vanilla-last": Method(layout="plain", blocks="none", rewired=False, pooling="last"),
    "vanilla-mean": Method(layout="plain", blocks="none", rewired=False, pooling="mean"),
    "echo": Method(layout="echo", blocks="none", rewired=False, pooling="mean"),
    "tp": Method(layout="prepend", blocks="whole", rewired=True, pooling="mean"),
    "htp": Method(layout="prepend", blocks="segmented", rewired=True, pooling="mean"),
}
METHODS = tuple(METHOD_TABLE)
BLOCK_MODES = ("sentences", "tokens", "adaptive")
KINDS = ("document", "query")
POOLINGS = ("mean", "last")
OPTIONAL_KEYS = {
    "pooling": None,
    "append_eos": False,
    "separate_prompt": False,
}  # left out of vector_settings at these values, so indexes
# built before the keys existed keep their encoder hash
RUNTIME_KEYS = (
    "device",
    "dtype",
    "batch_tokens",
    "max_batch_size",
    "max_padding",
    "cache_dir",
    "prefix_cache",
    "pack_weights",
    "reuse_memory",
    "attention_products",
)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a parsed YAML value has the declared type: booleans only as real booleans, never as 1 or "no"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list of any length
        return isinstance(value, (list, tuple)) and all(_fits(item, args[0]) for item in value)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(_fits, value, args))
    return hint is Any or isinstance(value, hint)


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_type_name(args[0])}s"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def checked_fields(cls: type, data: dict[str, Any], section: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping for a config dataclass, after refusing unknown keys and values of the wrong type, each named
    as section.key (a YAML `k: ten` or `center: "no"` fails here instead of misbehaving later)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"unknown keys in {section}: {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
    for key, value in data.items():
        if not _fits(value, hints[key]):
            raise error(f"{section}.{key} must be {_type_name(hints[key])}, got {value!r}")
    return dict(data)


@dataclass(frozen=True)
class EncoderConfig:
    """Every knob of the encoder; `None` means "take the model's default from the registry"."""

    model: str = "gemma3-270m"
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
    pooling: str | None = None
    append_eos: bool | None = None
    separate_prompt: bool | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: str | None = None
    prefix_cache: bool = True
    pack_weights: bool = True
    reuse_memory: bool = True  # on CPU: freed buffers stay in malloc's heap for the next batch (htp/heap.py)
    attention_products: bool = True  # on CPU in bfloat16: attention as two products, not SDPA (htp/attention.py)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EncoderValueError(f"encoder.method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.block_mode not in BLOCK_MODES:
            raise EncoderValueError(f"encoder.block_mode {self.block_mode!r} is not one of {', '.join(BLOCK_MODES)}")
        if self.window is not None:
            window = tuple(int(v) for v in self.window)
            if len(window) != 2 or window[0] < 0 or window[1] < window[0]:
                raise EncoderValueError(
                    f"encoder.window must be [start, stop) with 0 <= start <= stop, got {self.window!r}"
                )
            object.__setattr__(self, "window", window)
        for name in ("sentences_per_block", "block_tokens", "max_blocks", "batch_tokens", "max_batch_size"):
            if getattr(self, name) < 1:
                raise EncoderValueError(f"encoder.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_padding <= 1:
            raise EncoderValueError(f"encoder.max_padding must be in [0, 1], got {self.max_padding}")
        if self.pooling not in (None, *POOLINGS):
            raise EncoderValueError(f"encoder.pooling {self.pooling!r} is not one of {', '.join(POOLINGS)} (or null)")
        if self.max_length < 8:
            raise EncoderValueError(f"encoder.max_length must be >= 8, got {self.max_length}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build from a mapping (config.yaml's `encoder:`), refusing unknown keys and wrong types by name."""
        return cls(**checked_fields(cls, data, "encoder", EncoderValueError))

    @property
    def spec(self) -> Method:
        """The method's entry in METHOD_TABLE, with `pooling` overriding the method's read-out when set."""
        method = METHOD_TABLE[self.method]
        return method if self.pooling is None else replace(method, pooling=self.pooling)

    def resolved(self) -> EncoderConfig:
        """Every `None` filled from the model's registry defaults, so a manifest records what actually runs."""
        d = defaults_for(self.model)
        exit_layer = d.exit_layer if self.exit_layer is None else self.exit_layer
        layers = layer_count(self.model) if exit_layer < 0 or self.window is None else None
        if layers is not None and -layers <= exit_layer < 0:
            exit_layer = layers + 1 + exit_layer  # -1 and n name the same layer: record one spelling of it
        window = self.window
        if window is None:  # the default window of a model with fewer layers stops at its last one
            window = d.window if layers is None else (d.window[0], min(d.window[1], layers))
        return replace(
            self,
            exit_layer=exit_layer,
            window=window,
            final_norm=d.final_norm if self.final_norm is None else self.final_norm,
            query_prompt=d.query_prompt if self.query_prompt is None else self.query_prompt,
            document_prompt=d.document_prompt if self.document_prompt is None else self.document_prompt,
            pooling=d.pooling if self.pooling is None else self.pooling,
            append_eos=d.append_eos if self.append_eos is None else self.append_eos,
            separate_prompt=d.separate_prompt if self.separate_prompt is None else self.separate_prompt,
        )

    def vector_settings(self) -> dict[str, Any]:
        """The resolved settings a query must share with its index: everything that changes vectors, no runtime
        knobs."""
        return {
            key: value
            for key, value in self.resolved().to_dict().items()
            if key not in RUNTIME_KEYS and not (key in OPTIONAL_KEYS and value == OPTIONAL_KEYS[key])
        }

    def runtime(self) -> dict[str, Any]:
        """The knobs that change speed and memory but never vectors (device, batching, cache)."""
        return {key: getattr(self, key) for key in RUNTIME_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for manifests and hashing (window as a list)."""
        out = asdict(self)
        if out["window"] is not None:
            out["window"] = list(out["window"])
        return out
