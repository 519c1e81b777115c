"""Metadata fields kept with the documents, and `where` filters applied before ranking: every hit satisfies its
filter on every index type and mode, k hits come back for a filter matching 1% of the documents, mistakes are
clear errors (CLI exit 2, HTTP 400), and the CLI and HTTP forms agree with the API."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import WORDS
from pipeline.cli import main as cli_main
from pipeline.ingest.builder import build
from pipeline.metadata import MetadataError, metadata_json, metadata_table
from pipeline.query.filters import FilterError, allowed, parse_where
from pipeline.query.searcher import Searcher
from pipeline.service.app import create_app

DOCS = 2000
TAGS = ["red", "green", "blue", "amber"]


def record(i: int) -> dict:
    words = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8))
    return {
        "_id": f"d{i}",
        "title": f"Doc {i}",
        "text": f"{words.capitalize()}. Number {i} of the set.",
        "section": i % 100,
        "year": 1990 + i % 35,
        "score": i / 7,
        "open": i % 2 == 0,
        "tags": [TAGS[i % 4], TAGS[(i // 4) % 4]],
        "published": f"20{10 + i % 15}-0{1 + i % 9}-15",
        "kind": ["note", "report", "memo"][i % 3],
    }


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def holds(row: dict, where: dict) -> bool:
    """The filter's meaning, written out independently of pipeline.query.filters."""
    for key, condition in where.items():
        if key == "$and":
            if not all(holds(row, part) for part in condition):
                return False
            continue
        if key == "$or":
            if not any(holds(row, part) for part in condition):
                return False
            continue
        value = row.get(key)
        for op, target in (condition if isinstance(condition, dict) else {"$eq": condition}).items():
            if isinstance(value, list):
                inside = any(v in (target if op in ("$in", "$nin") else [target]) for v in value)
                ok = inside if op in ("$eq", "$in") else not inside
            elif op in ("$in", "$nin"):
                ok = (value in target) == (op == "$in")
            else:
                ok = {"$eq": value == target, "$ne": value != target}.get(op)
                if ok is None:
                    ok = {
                        "$gt": value > target,
                        "$gte": value >= target,
                        "$lt": value < target,
                        "$lte": value <= target,
                    }[op]
            if not ok:
                return False
    return True


FILTERS = [
    {"section": 7},  # 1% of the documents
    {"year": {"$gte": 2020}},
    {"tags": "blue", "open": True},
    {"$or": [{"kind": "memo"}, {"section": {"$in": [1, 2, 3]}}]},
    {"kind": {"$nin": ["note", "report"]}, "score": {"$lt": 100.5}},
    {"tags": {"$ne": "red"}},
    {"published": {"$gte": "2020-01-01", "$lt": "2022-06-01"}},  # a date field, compared with ISO dates
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("filters")
    rows = [record(i) for i in range(DOCS)]
    return write(folder / "corpus.jsonl", rows), {row["_id"]: row for row in rows}


@pytest.fixture(scope="module")
def built(corpus, tiny_model_dir, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    from pipeline.config import Config

    base = Config()
    config = replace(
        base,
        encoder=replace(base.encoder, model=str(tiny_model_dir), exit_layer=-1, window=(1, 4), device="cpu"),
        index=replace(base.index, calibrate=False, shard_size=256, train_sample=2000),
        data=replace(base.data, metadata_fields=("section", "year", "score", "open", "tags", "published", "kind")),
    )
    out = {}
    for factory in ("Flat", "IVF16,Flat", "HNSW16"):
        folder = tmp_path_factory.mktemp(factory.replace(",", "_"))
        chosen = replace(config, index=replace(config.index, factory=factory))
        build(chosen, corpus[0], folder)
        out[factory] = (folder, chosen)
    return out


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16"])
def test_every_hit_satisfies_its_filter_on_every_index_type_and_mode(built, corpus, factory):
    folder, config = built[factory]
    searcher = Searcher(folder, config)
    rows = corpus[1]
    for where in FILTERS:
        matching = sum(holds(row, where) for row in rows.values())
        for mode in ("dense", "bm25", "hybrid"):
            hits = searcher.search("library catalogue of the stock market report", 10, mode, where)
            assert all(holds(rows[hit.id], where) for hit in hits), (where, mode)
            if mode != "bm25":  # BM25 returns only documents sharing a word with the query
                assert len(hits) == min(10, matching), (where, mode, len(hits), matching)
            assert all(hit.metadata["section"] == rows[hit.id]["section"] for hit in hits)


def test_metadata_is_typed_listed_and_returned_with_hits(built, corpus, capsys):
    folder, config = built["Flat"]
    assert cli_main(["info", str(folder)]) == 0
    listed = json.loads(capsys.readouterr().out)["metadata"]
    assert listed == {
        "section": "integer",
        "year": "integer",
        "score": "float",
        "open": "boolean",
        "tags": "list",
        "published": "date",
        "kind": "string",
    }  # the JSON reader reads ISO dates as dates
    hit = Searcher(folder, config).search("Number 12 of the set", 1, "bm25", {"section": 12})[0]
    expected = {key: corpus[1]["d12"][key] for key in listed}
    assert hit.id == "d12" and hit.metadata == {**expected, "published": expected["published"] + "T00:00:00"}


def test_bad_filters_are_clear_errors_everywhere(built, capsys):
    folder, config = built["Flat"]
    searcher = Searcher(folder, config)
    cases = [
        ({"colour": "red"}, "unknown metadata field 'colour'; this index has kind, open, published"),
        ({"year": "2020"}, "'year' is an integer field: compare it with an integer, got \"2020\""),
        ({"year": {"$around": 2020}}, "unknown operator '\\$around' on 'year'"),
        ({"tags": {"$gt": "a"}}, "\\$gt cannot compare 'tags', a list field"),
        ({"kind": {"$in": "memo"}}, "\\$in on 'kind' takes a non-empty list"),
        ({"$or": []}, "\\$or takes a non-empty list"),
        ({"$not": {"kind": "memo"}}, "unknown operator '\\$not' at the top"),
    ]
    for where, message in cases:
        with pytest.raises(FilterError, match=message):
            searcher.search("report", 5, "dense", where)
    assert cli_main(["query", str(folder), "report", "--where", '{"colour": 1}']) == 2
    assert "unknown metadata field 'colour'" in capsys.readouterr().err
    assert cli_main(["query", str(folder), "report", "--where", "{not json"]) == 2
    assert "the filter is not valid JSON" in capsys.readouterr().err
    client = TestClient(create_app(folder, config))
    refused = client.post("/search", json={"queries": ["report"], "where": {"year": {"$gte": "x"}}})
    assert refused.status_code == 400 and "'year' is an integer field" in refused.json()["detail"]
    assert client.get("/search", params={"q": "report", "where": "[1]"}).status_code == 400


def nested(depth: int) -> dict:
    where: dict = {"section": 3}
    for _ in range(depth - 1):
        where = {"$and": [where]}
    return where


def test_filters_are_bounded_in_depth_and_size_in_every_entry_point(built, capsys):
    """A filter nested 1,000 levels deep exhausted the JSON decoder's recursion; now every entry point says the
    bound: the Python API, the CLI, the query string and the JSON body."""
    folder, config = built["Flat"]
    searcher = Searcher(folder, config)
    assert len(searcher.search("report", 5, "bm25", nested(10))) > 0  # within the bound: answered
    with pytest.raises(FilterError, match="nests more than 32 levels deep"):
        searcher.search("report", 5, "bm25", nested(40))
    wide = {"$or": [{"section": i} for i in range(1500)]}
    with pytest.raises(FilterError, match="more than 2000 objects, lists and values"):
        searcher.search("report", 5, "bm25", wide)
    deep_text = '{"$and": [' * 1000 + '{"section": 3}' + "]}" * 1000
    assert cli_main(["query", str(folder), "report", "--mode", "bm25", "--where", deep_text]) == 2
    assert "the filter nests too deeply to read; at most 32 levels" in capsys.readouterr().err
    long_text = json.dumps({"kind": {"$in": ["memo"] * 4000}})
    assert cli_main(["query", str(folder), "report", "--mode", "bm25", "--where", long_text]) == 2
    assert f"the filter has {len(long_text)} characters; at most 20000" in capsys.readouterr().err
    shallow_text = '{"$and": [' * 600 + '{"section": 3}' + "]}" * 600
    with pytest.raises(FilterError, match="nests"):
        searcher.search("report", 5, "bm25", parse_where(shallow_text))
    client = TestClient(create_app(folder, config))
    answer = client.get("/search", params={"q": "report", "mode": "bm25", "where": json.dumps(nested(40))})
    assert answer.status_code == 400 and "nests more than 32 levels" in answer.json()["detail"]
    body = '{"queries": ["report"], "mode": "bm25", "where": ' + deep_text + "}"
    answer = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "nests too deeply to read" in answer.json()["detail"]


def test_numbers_in_filters_are_finite_and_whole_where_equality_needs_them(built):
    folder, config = built["Flat"]
    searcher = Searcher(folder, config)
    for where in ({"year": float("nan")}, {"year": {"$gt": float("inf")}}, {"score": {"$lt": float("-inf")}}):
        with pytest.raises(FilterError, match="numbers in a filter must be finite"):
            searcher.search("report", 5, "bm25", where)
    for where in ({"year": 2000.5}, {"year": {"$in": [2001, 2000.5]}}, {"year": {"$ne": 1.25}}):
        with pytest.raises(FilterError, match="is an integer field: \\$(eq|in|ne) with .* can match no document"):
            searcher.search("report", 5, "bm25", where)
    assert searcher.search("report", 5, "dense", {"year": {"$gte": 2000.5}})  # ordered: means what it says
    assert searcher.search("report", 5, "dense", {"year": 2005.0}) == searcher.search(
        "report", 5, "dense", {"year": 2005}
    )
    client = TestClient(create_app(folder, config))
    body = '{"queries": ["report"], "where": Infinity}'  # not an object: a 422 that renders (it was a 500)
    answer = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "where"]
    for text in ('{"year": NaN}', '{"year": 1e400}'):
        answer = client.get("/search", params={"q": "report", "where": text})
        assert answer.status_code == 400 and "must be finite" in answer.json()["detail"]


def test_the_cli_and_http_forms_agree_with_the_api(built, capsys):
    folder, config = built["HNSW16"]
    where = {"year": {"$gte": 2015}, "tags": {"$in": ["green", "amber"]}}
    api = [hit.id for hit in Searcher(folder, config).search("protein market", 10, "hybrid", where)]
    assert (
        cli_main(
            [
                "query",
                str(folder),
                "protein market",
                "-k",
                "10",
                "--mode",
                "hybrid",
                "--json",
                "--where",
                json.dumps(where),
            ]
        )
        == 0
    )
    assert [hit["id"] for hit in json.loads(capsys.readouterr().out)] == api
    client = TestClient(create_app(folder, config))
    posted = client.post("/search", json={"queries": ["protein market"], "k": 10, "mode": "hybrid", "where": where})
    got = client.get("/search", params={"q": "protein market", "k": 10, "mode": "hybrid", "where": json.dumps(where)})
    assert [h["id"] for h in posted.json()["results"][0]["hits"]] == api == [h["id"] for h in got.json()["hits"]]


def test_metadata_mistakes_are_named_and_metadata_changes_reencode_nothing(tmp_path, config):
    fields = replace(config.data, metadata_fields=("year",))
    chosen = replace(config, data=fields, index=replace(config.index, calibrate=False))
    rows = [{"_id": f"d{i}", "title": "", "text": f"Text number {i} here.", "year": 2000 + i} for i in range(6)]
    first = build(chosen, write(tmp_path / "a.jsonl", rows), tmp_path / "index")
    again = build(chosen, write(tmp_path / "a.jsonl", [{**row, "year": 1900} for row in rows]), tmp_path / "index")
    assert first.encoded == 6 and again.encoded == 0 and again.reused == 6
    searcher = Searcher(tmp_path / "index", chosen)
    assert len(searcher.search("Text number", 10, "dense", {"year": {"$lt": 1950}})) == 6
    assert searcher.search("Text number", 10, "dense", {"year": 2003}) == []  # the old value is gone
    mixed = [*rows[:3], {**rows[3], "year": "MCMLXXX"}]
    with pytest.raises(MetadataError, match="'year' mixes types: document 'd0' has an integer, document 'd3' a string"):
        build(chosen, write(tmp_path / "b.jsonl", mixed), tmp_path / "other")
    nested = [*rows[:2], {**rows[2], "year": {"value": 1}}]
    with pytest.raises(MetadataError, match="record 3 \\(id 'd2'\\): metadata field 'year' holds a nested object"):
        build(chosen, write(tmp_path / "c.jsonl", nested), tmp_path / "other")
    missing = replace(chosen, data=replace(fields, metadata_fields=("month",)))
    with pytest.raises(ValueError, match="no record has the metadata field\\(s\\) \\['month'\\]"):
        build(missing, write(tmp_path / "d.jsonl", rows), tmp_path / "other")
    everything = replace(chosen, data=replace(fields, metadata_fields="all"))
    dated = [{**row, "when": dt.date(2020, 1, 1 + i).isoformat()} for i, row in enumerate(rows)]
    build(everything, write(tmp_path / "e.jsonl", dated), tmp_path / "all")
    searcher = Searcher(tmp_path / "all", everything)
    assert searcher.index.manifest.metadata == {"year": "integer", "when": "date"}
    hits = searcher.search("Text number", 10, "bm25", {"when": {"$gte": "2020-01-04"}})
    assert sorted(hit.id for hit in hits) == ["d3", "d4", "d5"]


def test_the_search_page_filters_with_its_field_box(built):
    import shutil

    from playwright.sync_api import sync_playwright

    from test_serve import serving

    folder, _ = built["Flat"]
    with serving(folder) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#where", state="visible")  # shown because the index has metadata fields
        assert "section (integer)" in page.locator("#where").get_attribute("title")
        page.fill("#q", "library catalogue")
        page.select_option("#mode", "dense")
        page.fill("#where", '{"section": 7}')
        page.click("button[type=submit]")
        page.wait_for_selector("#results li")
        shown = page.locator("#results li .metadata").all_inner_texts()
        assert len(shown) == 10 and all("section: 7 ·" in line for line in shown)
        page.fill("#where", '{"colour": 1}')
        page.click("button[type=submit]")
        page.wait_for_selector("#status:has-text('error')")  # (the page's CSP forbids eval, so no wait_for_function)
        assert "unknown metadata field 'colour'" in page.locator("#status").inner_text()
        browser.close()


def test_metadata_types_name_the_real_conflict_and_refuse_what_a_column_cannot_hold():
    rows = [metadata_json({"n": value}, f"record {i}") for i, value in enumerate([3, 2.5, "x"])]
    with pytest.raises(MetadataError, match="document 'a' has an integer, document 'c' a string"):
        metadata_table(["n"], rows, ["a", "b", "c"])  # integers and floats agree; the string breaks the field
    with pytest.raises(MetadataError, match="record 7: metadata field 'n' holds 9223372036854775808, beyond"):
        metadata_json({"n": 2**63}, "record 7")
    zone = dt.timezone(dt.timedelta(hours=2))
    rows = [metadata_json({"at": dt.datetime(2020, 1, 1, 1, 0, tzinfo=zone)}, "r0")]
    rows.append(metadata_json({"at": dt.datetime(2019, 12, 31, 23, 30)}, "r1"))
    table, types = metadata_table(["at"], rows, ["z", "u"])
    assert types == {"at": "date"}
    assert table.column("at").to_pylist() == [dt.datetime(2019, 12, 31, 23, 0), dt.datetime(2019, 12, 31, 23, 30)]
    # a zoned filter date is moved to UTC the same way: 01:15+02:00 is 23:15 UTC, between the two
    assert allowed({"at": {"$gt": "2020-01-01T01:15:00+02:00"}}, table, types).tolist() == [False, True]
    numbers, kinds = metadata_table(["n"], [metadata_json({"n": 5}, "r")], ["d"])
    with pytest.raises(FilterError, match=f"'n' is an integer field holding 64-bit integers; {10**30} is beyond"):
        allowed({"n": {"$lt": 10**30}}, numbers, kinds)
