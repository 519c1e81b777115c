"""Property tests over the surfaces users feed: any `where` filter, any JSON-lines records, any write request body
either works or is refused with the package's own error (an HTTP 4xx), never a traceback or a 500."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import hypothesis.strategies as st
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from conftest import write_corpus
from pipeline.errors import PipelineError
from pipeline.ingest.builder import build
from pipeline.ingest.load import FieldNames, load_documents
from pipeline.query.filters import allowed, parse_where
from pipeline.service.app import create_app

FIELDS = {"section": "integer", "score": "float", "open": "boolean", "tags": "list", "kind": "string", "day": "date"}
TABLE = pa.table(
    {
        "section": pa.array([1, 2, None], pa.int64()),
        "score": pa.array([0.5, None, 2.0], pa.float64()),
        "open": pa.array([True, False, None]),
        "tags": pa.array([["a"], None, ["b", "c"]], pa.list_(pa.string())),
        "kind": pa.array(["memo", "note", None]),
        "day": pa.array([dt.datetime(2020, 1, 1), None, dt.datetime(2021, 6, 1)], pa.timestamp("us")),
    }
)
OPERATORS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$and", "$or", "$not", "$regex"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["2020-01-01", "2021-06-01T00:00:00+02:00", "not a date"]),
)
KEYS = st.one_of(st.sampled_from([*FIELDS, *OPERATORS, "colour"]), st.text(max_size=6))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_any_filter_selects_rows_or_is_refused_by_name(where):
    try:
        parsed = parse_where(json.dumps(where))
        if parsed is None:
            return
        mask = allowed(parsed, TABLE, FIELDS)
    except PipelineError:
        return
    assert mask.dtype == bool and len(mask) == TABLE.num_rows


RECORD_VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2)
)
RECORDS = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(["_id", "title", "text", "section"]), RECORD_VALUES, max_size=4),
        RECORD_VALUES,
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(RECORDS)
def test_any_json_lines_file_loads_or_is_refused_by_name(tmp_path, records):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    try:
        loaded = load_documents(path, FieldNames(), cache_dir=tmp_path / "cache")
    except PipelineError:
        return
    assert all(isinstance(doc_id, str) and doc_id for doc_id in loaded.dataset["id"])


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    from pipeline.config import Config

    base = Config()
    config = replace(
        base,
        encoder=replace(base.encoder, model=str(tiny_model_dir), exit_layer=-1, window=(1, 4), device="cpu"),
        index=replace(base.index, factory="Flat", calibrate=False),
        data=replace(base.data, metadata_fields=("section",)),
        serve=replace(base.serve, warm_up=False, allow_writes_without_key=True),
    )
    folder = tmp_path_factory.mktemp("served")
    corpus = folder / "corpus.jsonl"
    write_corpus(corpus, 8)
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    corpus.write_text("".join(json.dumps({**row, "section": i}) + "\n" for i, row in enumerate(rows)))
    build(config, corpus, folder / "index")
    return TestClient(create_app(folder / "index", config))


def post(client: TestClient, path: str, body: object):
    """POST a body as Python's json writes it, NaN and Infinity included (httpx's own encoder refuses them)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


@settings(max_examples=40, deadline=None)
@given(st.one_of(RECORDS, JSON))
def test_any_write_body_is_answered_or_refused_never_a_500(served, documents):
    answer = post(served, "/documents", {"documents": documents})
    assert answer.status_code < 500, answer.text
    assert served.get("/health").status_code == 200


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_any_search_filter_over_http_is_answered_or_refused_never_a_500(served, where):
    answer = post(served, "/search", {"queries": ["report"], "mode": "bm25", "where": where})
    assert answer.status_code < 500, answer.text
    one = served.get("/search", params={"q": "report", "mode": "bm25", "where": json.dumps(where)})
    assert one.status_code < 500, one.text
