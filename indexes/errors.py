"""The errors of `indexes` that a user can fix (a missing, damaged or busy index, bad index settings): one base
class, so callers can report them in one line and let real bugs keep their traceback."""

from __future__ import annotations

from pathlib import Path


class IndexStoreError(Exception):
    """Base of every user-facing error raised by `indexes`."""


class IndexValueError(IndexStoreError, ValueError):
    """A factory, a parameter or stored content the index cannot use; the message names it."""


class IndexMissingError(IndexStoreError, FileNotFoundError):
    """No index, or a file of it, where one was expected."""


class IndexFolderError(IndexStoreError, RuntimeError):
    """The output folder cannot be written as an index: another build holds it, or it is not an index."""


def damaged(path: Path, why: str) -> IndexValueError:
    """The error for a file of a version that fails its checks, naming it and what to do."""
    return IndexValueError(f"{path} is damaged ({why}): rebuild the index with `htp build`")


def one_line(err: BaseException) -> str:
    """A library's error message on one line, cut to 200 characters, to quote inside ours."""
    return " ".join(str(err).split())[:200]
