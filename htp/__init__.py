"""Hierarchical Token Prepending: a decoder-only LM as a training-free text embedder."""

from htp.config import METHODS, EncoderConfig
from htp.encoder import HTPEncoder
from htp.errors import ModelNotFoundError
from htp.registry import MODELS

__all__ = ["METHODS", "MODELS", "EncoderConfig", "HTPEncoder", "ModelNotFoundError"]
