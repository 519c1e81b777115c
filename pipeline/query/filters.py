"""The `where` filter language, as users know it from Chroma and Mongo: `{"section": 3}`, `{"year": {"$gte": 2020}}`,
`$eq $ne $gt $gte $lt $lte $in $nin`, `$and`, `$or` (several fields in one object are and-ed). A filter is checked
against the index's metadata types first, so a mistake is a clear error and never an empty result; then it is
evaluated with pyarrow over the metadata columns into the documents it allows, which search ranks among.

On a list field, `$eq`/`$in` match a document whose list holds the value (one of the values), `$ne`/`$nin` one
whose list holds none; a document without the field matches only `$ne` and `$nin`."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import PipelineValueError
from pipeline.metadata import INT64

COMPARE = {
    "$eq": pc.equal,
    "$ne": pc.not_equal,
    "$gt": pc.greater,
    "$gte": pc.greater_equal,
    "$lt": pc.less,
    "$lte": pc.less_equal,
}
MEMBERSHIP = ("$in", "$nin")
ORDERED = ("$gt", "$gte", "$lt", "$lte")
NEGATED = ("$ne", "$nin")  # a document without the field matches these
EQUALITY = ("$eq", "$ne", "$in", "$nin")
MAX_DEPTH = 32  # levels of objects and lists in one filter
MAX_NODES = 2000  # objects, lists and values in one filter
MAX_CHARS = 20_000  # a filter's JSON text


class FilterError(PipelineValueError):
    """A `where` filter that is malformed or does not fit the index's metadata fields."""


def parse_where(text: str | None) -> dict | None:
    """A `where` filter from its JSON text (CLI and query string), or None for none."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_CHARS:
        raise FilterError(f"the filter has {len(text)} characters; at most {MAX_CHARS}")
    try:
        where = json.loads(text)
    except ValueError as err:
        raise FilterError(f'the filter is not valid JSON ({err}): write it like {{"year": {{"$gte": 2020}}}}') from err
    except RecursionError:
        raise FilterError(f"the filter nests too deeply to read; at most {MAX_DEPTH} levels") from None
    return checked_shape(where)


def checked_shape(where: Any) -> dict:
    """`where` itself if it is a JSON object within the bounds on depth and size, else a FilterError saying which
    bound it passes (walked without recursion, so no filter can exhaust the stack)."""
    if not isinstance(where, dict):
        raise FilterError(f"the filter must be a JSON object, got {type(where).__name__}")
    nodes, stack = 0, [(where, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests more than {MAX_DEPTH} levels deep; at most {MAX_DEPTH}")
        if nodes > MAX_NODES:
            raise FilterError(f"the filter has more than {MAX_NODES} objects, lists and values; at most {MAX_NODES}")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return where


def allowed(where: dict, table: pa.Table | None, types: dict[str, str]) -> np.ndarray:
    """The documents (rows of the metadata `table`, typed as `types` says) that `where` allows, as a bool mask."""
    if not types or table is None:
        raise FilterError("this index keeps no metadata fields to filter on: build it with data.metadata_fields")
    return _node(where, table, types).to_numpy(zero_copy_only=False)


def _node(node: Any, table: pa.Table, types: dict[str, str]) -> pa.Array:
    if not isinstance(node, dict) or not node:
        raise FilterError(f"a filter must be a non-empty JSON object, got {json.dumps(node)[:80]}")
    parts = []
    for key, value in node.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters, got {json.dumps(value)[:80]}")
            masks = [_node(item, table, types) for item in value]
            combine = pc.and_ if key == "$and" else pc.or_
            mask = masks[0]
            for other in masks[1:]:
                mask = combine(mask, other)
            parts.append(mask)
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top of a filter (use $and, $or, or a field name)")
        else:
            parts.append(_field(key, value, table, types))
    mask = parts[0]
    for other in parts[1:]:
        mask = pc.and_(mask, other)
    return mask


def _field(name: str, condition: Any, table: pa.Table, types: dict[str, str]) -> pa.Array:
    if name not in types:
        raise FilterError(f"unknown metadata field {name!r}; this index has {', '.join(types)}")
    if not isinstance(condition, dict):
        condition = {"$eq": condition}
    if not condition:
        raise FilterError(f"the condition on {name!r} is empty")
    mask = None
    for op, value in condition.items():
        one = _compare(name, op, value, table.column(name), types[name])
        mask = one if mask is None else pc.and_(mask, one)
    return mask


def _compare(name: str, op: str, value: Any, column: pa.ChunkedArray, kind: str) -> pa.Array:
    if op not in COMPARE and op not in MEMBERSHIP:
        raise FilterError(f"unknown operator {op!r} on {name!r}; use one of {', '.join([*COMPARE, *MEMBERSHIP])}")
    if op in ORDERED and kind in ("boolean", "list"):
        raise FilterError(f"{op} cannot compare {name!r}, {_a(kind)} field; use $eq, $ne, $in or $nin")
    if op in MEMBERSHIP:
        if not isinstance(value, list) or not value:
            raise FilterError(f"{op} on {name!r} takes a non-empty list of values, got {json.dumps(value)[:80]}")
        values = [_typed(name, item, kind) for item in value]
    else:
        values = [_typed(name, value, kind)]
    fractions = [v for v in values if isinstance(v, float) and not v.is_integer()]
    if kind == "integer" and op in EQUALITY and fractions:
        # an ordered comparison with 2000.5 means what it says; equality with it could only ever match nothing
        raise FilterError(
            f"{name!r} is an integer field: {op} with {fractions[0]} can match no document; "
            "compare it with a whole number, or use $gt/$gte/$lt/$lte"
        )
    numeric = kind in ("integer", "float") and any(isinstance(v, float) for v in values)
    element = pa.array(values, type=pa.string() if kind == "list" else pa.float64() if numeric else column.type)
    if kind == "list":
        hit = pc.is_in(pc.list_flatten(column), value_set=element).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        holds = np.zeros(len(column), dtype=bool)
        holds[parents[hit]] = True
        mask = pa.array(holds)
        return pc.invert(mask) if op in NEGATED else mask
    if op in MEMBERSHIP:
        mask = pc.is_in(column, value_set=element)
        mask = pc.invert(mask) if op == "$nin" else mask
    else:
        mask = COMPARE[op](column, element[0])
    return pc.fill_null(mask, op in NEGATED)


def _typed(name: str, value: Any, kind: str) -> Any:
    """A filter value checked against its field's type (a date parsed from its ISO form)."""
    if kind == "date":
        try:
            moment = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise FilterError(
                f'{name!r} is a date field: compare it with an ISO date such as "2020-01-31", got '
                f"{json.dumps(value)[:80]}"
            ) from None
        # the index keeps dates as UTC without a zone (pipeline.metadata): a zoned filter date is moved to UTC
        return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
        raise FilterError(f"{name!r} is an integer field holding 64-bit integers; {value} is beyond that range")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{name!r}: numbers in a filter must be finite, got {value}")
    if kind in ("integer", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, bool if kind == "boolean" else str)
    if not ok:
        shown = "a string" if kind == "list" else _a(kind)
        raise FilterError(f"{name!r} is {_a(kind)} field: compare it with {shown}, got {json.dumps(value)[:80]}")
    return value


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
