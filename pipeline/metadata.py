"""Documents' metadata fields, kept beside their text (`data.metadata_fields`): each record's values checked as
they are read (JSON per document in the loaded dataset), then one typed column per field for the index's metadata
part. A field has one type: string, integer, float (integers mixed in are read as floats), boolean, date, or list
(of strings); a field mixing others, or holding a nested object, is refused with the record that breaks it."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipeline.errors import PipelineValueError

ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.timestamp("us"),
    "list": pa.list_(pa.string()),
}
DATE = "$date"  # how a date travels in a record's JSON: {"$date": "2020-01-31T00:00:00"}
INT64 = range(-(2**63), 2**63)  # what an integer column holds


class MetadataError(PipelineValueError):
    """A metadata value or field the index cannot keep; the message names the record."""


def metadata_json(values: dict[str, Any], record: str) -> str:
    """A record's metadata values as one JSON object (dates tagged), refusing values no column can hold."""
    return json.dumps({name: _plain(value, name, record) for name, value in values.items()}, ensure_ascii=False)


def _plain(value: Any, name: str, record: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if value not in INT64:
            raise MetadataError(f"{record}: metadata field {name!r} holds {value}, beyond a 64-bit integer")
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dt.date):  # datetime is a date too
        moment = value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
        if moment.tzinfo is not None:  # stored as UTC without a zone, so moments from any zone compare right
            moment = moment.astimezone(dt.UTC)
        return {DATE: moment.replace(tzinfo=None).isoformat()}
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise MetadataError(f"{record}: metadata field {name!r} is a list holding other things than strings")
        return list(value)
    kind = "a nested object" if isinstance(value, dict) else f"a {type(value).__name__}"
    raise MetadataError(
        f"{record}: metadata field {name!r} holds {kind}; fields must hold strings, numbers, booleans, dates or "
        "lists of strings"
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "date"
    return "string"


def metadata_table(fields: Sequence[str], rows: Sequence[str], ids: Sequence[str]) -> tuple[pa.Table, dict[str, str]]:
    """One typed column per field from the documents' metadata JSON (row i is document ids[i]), and each field's
    type; a field whose values mix types is refused, naming the first document that differs."""
    values: dict[str, list[Any]] = {name: [] for name in fields}
    for row in rows:
        record = json.loads(row)
        for name in fields:
            values[name].append(record.get(name))
    types: dict[str, str] = {}
    for name, column in values.items():
        seen: dict[str, int] = {}
        for at, value in enumerate(column):
            if value is not None:
                seen.setdefault(_kind(value), at)
        kinds = set(seen) - ({"integer"} if seen.keys() >= {"integer", "float"} else set())
        if len(kinds) > 1:
            order = sorted(seen, key=lambda kind: seen[kind])
            first = order[0]
            other = next(kind for kind in order[1:] if {first, kind} != {"integer", "float"})
            raise MetadataError(
                f"metadata field {name!r} mixes types: document {ids[seen[first]]!r} has {_a(first)}, document "
                f"{ids[seen[other]]!r} {_a(other)}; give the field one type"
            )
        types[name] = kinds.pop() if kinds else "string"
        if types[name] == "date":
            values[name] = [None if v is None else dt.datetime.fromisoformat(v[DATE]) for v in column]
        elif types[name] == "float":
            values[name] = [None if v is None else float(v) for v in column]
    table = pa.table({name: pa.array(values[name], ARROW_TYPES[types[name]]) for name in fields})
    return table, types


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
