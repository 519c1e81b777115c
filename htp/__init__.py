"""Hierarchical Token Prepending: a decoder-only LM as a training-free text embedder."""

from typing import TYPE_CHECKING

from htp.config import METHODS, EncoderConfig
from htp.errors import ModelNotFoundError
from htp.registry import MODELS

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ below imports it on first use
    from htp.encoder import HTPEncoder

__all__ = ["METHODS", "MODELS", "EncoderConfig", "HTPEncoder", "ModelNotFoundError"]


def __getattr__(name: str) -> object:
    """HTPEncoder is imported on first use, so configuration and the CLI's help load no torch or transformers."""
    if name == "HTPEncoder":
        from htp.encoder import HTPEncoder

        return HTPEncoder
    raise AttributeError(f"module 'htp' has no attribute {name!r}")
