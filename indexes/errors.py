"""The errors of `indexes` that a user can fix (a missing, damaged or busy index, bad index settings): one base
class, so callers can report them in one line and let real bugs keep their traceback."""

from __future__ import annotations


class IndexStoreError(Exception):
    """Base of every user-facing error raised by `indexes`."""


class IndexValueError(IndexStoreError, ValueError):
    """A factory, a parameter or stored content the index cannot use; the message names it."""


class IndexMissingError(IndexStoreError, FileNotFoundError):
    """No index, or a file of it, where one was expected."""


class IndexFolderError(IndexStoreError, RuntimeError):
    """The output folder cannot be written as an index: another build holds it, or it is not an index."""
