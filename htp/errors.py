"""The errors of `htp` that a user can fix (configuration, model, input text): one base class, so callers such as
the CLI can report them in one line and let real bugs keep their traceback."""

from __future__ import annotations


class EncoderError(Exception):
    """Base of every user-facing error raised by `htp`."""


class EncoderValueError(EncoderError, ValueError):
    """A setting or an input the encoder cannot use; the message names it."""


class EncoderTypeError(EncoderError, TypeError):
    """An input of the wrong type, or a model the encoder cannot rewire."""


class ModelNotFoundError(EncoderError, RuntimeError):
    """The configured model is neither registered-and-installed, a local folder, nor reachable."""
