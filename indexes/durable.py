"""Durable writes: a file replaced atomically (temp file, fsync, rename, fsync of the folder), so a crash leaves
either the old file or the new one, never a torn one. Used by index versions and by the pipeline's shards."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(file)` via a temp file beside it, then rename it over `path`."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    with temp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    fsync(path.parent)
