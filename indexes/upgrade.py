"""Older layouts of an index folder are read here: the manifest's format number says what wrote it, and
`upgrade_manifest` turns any older one into today's fields; CURRENT pointers and index folders from before their
current form are recognised here too. One thing lies outside this package, since it belongs to the encoder:
encoder settings an older manifest lacks take their former values from `htp.config.OPTIONAL_KEYS` wherever a
manifest's encoder is turned into an EncoderConfig (the searcher and live changes)."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import TypeAlias

from indexes.errors import IndexValueError

Layout: TypeAlias = tuple[tuple[str, ...], dict[str, "Layout"]]

FORMAT = 3  # 3: `metadata` types and `changes` since the last full build (from 2: none); 2: the manifest lists its
# `parts`; 1 (no `format` field): flags `bm25` and `centered` instead
FORMAT_1_COPIES = ("model", "method", "exit_layer", "window")  # format 1 copied these beside `encoder` early on
BEFORE_THE_MARKER = {"manifest.json": "encoder", "meta.json": "config_hash"}  # file -> a field only this package writes
TEMP_BEFORE_THE_MARKER = re.compile(r"\.tmp-[a-z0-9_]{8}")  # tempfile.mkdtemp's names, as builds made them in versions/


def upgrade_manifest(data: dict) -> dict:
    """A manifest's fields as the current format has them, whichever format wrote them."""
    written = data.get("format", 1)
    if not isinstance(written, int) or isinstance(written, bool) or not 1 <= written <= FORMAT:
        raise IndexValueError(
            f"manifest format {written!r} is not one this version of htp-index reads (1 to "
            f"{FORMAT}): upgrade htp-index, or rebuild the index"
        )
    if written == 1:
        old = data
        data = {key: value for key, value in old.items() if key not in (*FORMAT_1_COPIES, "bm25", "centered")}
        data["parts"] = [
            "faiss",
            *(["center"] if old.get("centered") else []),
            *(["bm25"] if old.get("bm25") else []),
            *(["calibration"] if old.get("calibration") else []),
        ]
    return {**data, "format": FORMAT}


def read_pointer(text: str) -> tuple[str, str | None]:
    """(version name, its manifest's SHA-256) from CURRENT's text; pointers written before the digest was recorded
    hold the name only (None)."""
    lines = text.split()
    return (lines[0] if lines else ""), (lines[1] if len(lines) > 1 else None)


def made_before_the_marker(index_dir: Path, current: str) -> bool:
    """An index folder made before folders got their marker file is known by its CURRENT pointer."""
    return (index_dir / current).is_file()


# What a version or shard folder made before the marker may hold, and nothing else: names (glob patterns) of its
# files, and its subfolders with the same rule for theirs. A folder holding anything else is not provably ours.
VERSION_BEFORE_THE_MARKER: Layout = (
    ("manifest.json", "index.faiss", "index.ivfdata", "ids.parquet", "docs.parquet", "center.npy", "calibration.npz",
     "metadata.parquet", "deleted.npy", "*.tmp"),
    {"bm25": (("*.index.npy", "*.index.json", "*.tmp"), {}), "terms": (("*.npy", "*.tmp"), {})},
)  # fmt: skip
SHARDS_BEFORE_THE_MARKER: Layout = (
    ("meta.json", "shard-*.parquet", "*.tmp"),
    {"calibration-texts": (("meta.json", "shard-*.parquet", "*.tmp"), {})},
)


def owned_before_the_marker(folder: Path) -> bool:
    """A version or shard folder made before folders got their marker file: a manifest.json or meta.json holding
    this package's fields, and nothing in it but what such a folder holds (a user's own file inside means it
    cannot be shown to be ours, so it is never deleted)."""
    for (name, field), layout in zip(BEFORE_THE_MARKER.items(), (VERSION_BEFORE_THE_MARKER, SHARDS_BEFORE_THE_MARKER)):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and field in data and _holds_only(folder, layout):
            return True
    return False


def _holds_only(folder: Path, layout: Layout) -> bool:
    """Whether every entry of `folder` is a file matching `layout`'s names or a subfolder it lists (recursively);
    a link is never taken for a file or folder of ours."""
    names, subfolders = layout
    for child in folder.iterdir():
        if child.is_symlink():
            return False
        if child.is_dir():
            if child.name not in subfolders or not _holds_only(child, subfolders[child.name]):
                return False
        elif not any(fnmatch.fnmatchcase(child.name, pattern) for pattern in names):
            return False
    return True


def temp_before_the_marker(folder: Path) -> bool:
    """A killed build's temp folder in versions/ from before the marker: named as tempfile.mkdtemp names them,
    holding no folder of its own but bm25 (what a version holds)."""
    return bool(TEMP_BEFORE_THE_MARKER.fullmatch(folder.name)) and all(
        child.is_file() or child.name == "bm25" for child in folder.iterdir()
    )
