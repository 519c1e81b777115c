"""The errors of `pipeline` that a user can fix (configuration, input documents, shards, queries): one base class;
the CLI prints these, and those of `htp` and `indexes`, as one line and lets real bugs keep their traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every user-facing error raised by `pipeline`."""


class PipelineValueError(PipelineError, ValueError):
    """A configuration value, an input or a request the pipeline cannot use; the message names it."""


class InputMissingError(PipelineError, FileNotFoundError):
    """An input file or folder that does not exist."""
