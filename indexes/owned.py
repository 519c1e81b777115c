"""What this package wrote inside an index folder, and how it removes it: only folders it can show it made are
ever deleted (an index may share a folder with the user's own files, `htp build --force`)."""

from __future__ import annotations

import os
from pathlib import Path

from indexes.upgrade import owned_before_the_marker

OWNED = ".htp-owned"  # written first into every folder the package makes in an index folder, and removed last


def mark_owned(folder: Path) -> None:
    """Record that this package made `folder` (call right after creating it)."""
    (folder / OWNED).touch()


def written_here(folder: Path) -> bool:
    """True when this package can show it made `folder`: its marker, or for a version or shard folder made before
    the marker, what indexes.upgrade recognises."""
    return (folder / OWNED).is_file() or owned_before_the_marker(folder)


def remove_owned(folder: Path) -> None:
    """Delete a folder this package made, its marker last, so a kill midway leaves a folder still known as its own
    (and removed by the next build) rather than one nobody may delete."""
    mark_owned(folder)
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if not (root == str(folder) and name == OWNED):
                os.unlink(os.path.join(root, name))
        for name in dirs:  # emptied already (bottom-up); a link to a folder is removed, never followed
            path = os.path.join(root, name)
            os.unlink(path) if os.path.islink(path) else os.rmdir(path)
    os.unlink(folder / OWNED)
    os.rmdir(folder)
