"""Document loading: every input format gives the same id/title/text dataset; every bad input names file and record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from pipeline.ingest.load import DocumentError, FieldNames, iter_batches, load_documents

RECORDS = [
    {"id": "a1", "title": "First", "text": "The cat sat on the mat."},
    {"id": "b2", "title": "Second", "text": "Stock markets fell sharply."},
    {"id": "c3", "title": "Third", "text": "Librarians index books by subject."},
]
EXPECTED = {"id": ["a1", "b2", "c3"], "title": ["First", "Second", "Third"], "text": [r["text"] for r in RECORDS]}


@pytest.fixture
def load(tmp_path):
    """load_documents with the datasets cache kept inside the test's temp folder."""

    def run(path: Path, fields: FieldNames = FieldNames()):
        return load_documents(path, fields, cache_dir=tmp_path / "cache")

    return run


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join(",".join(row) + "\n" for row in rows))
    return path


def table() -> pa.Table:
    return pa.Table.from_pylist(RECORDS)


def as_columns(result) -> dict[str, list]:
    return result.dataset.to_dict()


def test_jsonl(load, tmp_path):
    result = load(write_jsonl(tmp_path / "docs.jsonl", RECORDS))
    assert as_columns(result) == EXPECTED and result.skipped_empty == 0
    assert result.dataset.features == datasets.Features({k: datasets.Value("string") for k in ("id", "title", "text")})
    assert "jsonl file" in result.source


def test_json_array(load, tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(RECORDS))
    assert as_columns(load(path)) == EXPECTED


def test_parquet(load, tmp_path):
    pq.write_table(table(), tmp_path / "docs.parquet")
    assert as_columns(load(tmp_path / "docs.parquet")) == EXPECTED


def test_csv_keeps_fields_literal(load, tmp_path):
    path = write_csv(tmp_path / "docs.csv", [["id", "title", "text"], ["007", "Bond", "NA"], ["008", "", "plain text"]])
    assert as_columns(load(path)) == {"id": ["007", "008"], "title": ["Bond", ""], "text": ["NA", "plain text"]}


@pytest.mark.parametrize("writer", ["stream", "file"])
def test_arrow_file(load, tmp_path, writer):
    path = tmp_path / "docs.arrow"
    if writer == "stream":
        with pa.ipc.new_stream(str(path), table().schema) as out:
            out.write_table(table())
    else:
        feather.write_feather(table(), str(path), compression="uncompressed")
    assert as_columns(load(path)) == EXPECTED


def test_save_to_disk_folder_is_read_without_writing_into_it(load, tmp_path):
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(folder))
    before = sorted(p.name for p in folder.iterdir())
    result = load(folder)
    assert as_columns(result) == EXPECTED and "save_to_disk folder" in result.source
    assert sorted(p.name for p in folder.iterdir()) == before
    assert all(str(f["filename"]).startswith(str(tmp_path / "cache")) for f in result.dataset.cache_files)


def test_save_to_disk_with_splits_asks_for_one(load, tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(RECORDS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="several splits \\(train\\)"):
        load(tmp_path / "dd")


def test_beir_folder_uses_beir_field_names(load, tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    write_jsonl(folder / "corpus.jsonl", [{"_id": r["id"], "title": r["title"], "text": r["text"]} for r in RECORDS])
    result = load(folder, FieldNames(id_field="doc", text_field="body"))
    assert as_columns(result) == EXPECTED and result.source == f"BEIR folder {folder}"


def test_integer_ids_become_strings_and_missing_titles_empty(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": 1, "text": "one"}, {"id": 22, "text": "two"}])
    assert as_columns(load(path)) == {"id": ["1", "22"], "title": ["", ""], "text": ["one", "two"]}
    assert as_columns(load(path, FieldNames(title_field=None)))["title"] == ["", ""]


def test_mixed_string_and_integer_ids(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": 1, "text": "one"}, {"id": "x", "text": "two"}])
    assert as_columns(load(path))["id"] == ["1", "x"]


def test_custom_field_names(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"doc": "k", "head": "H", "body": "B"}])
    assert as_columns(load(path, FieldNames("doc", "head", "body"))) == {"id": ["k"], "title": ["H"], "text": ["B"]}


def test_empty_texts_are_skipped_and_counted(load, tmp_path):
    records = RECORDS + [{"id": "e1", "title": "t", "text": ""}, {"id": "e2", "title": "t", "text": " \n\t "}]
    result = load(write_jsonl(tmp_path / "docs.jsonl", records))
    assert result.skipped_empty == 2 and as_columns(result) == EXPECTED


def test_iter_batches_from_an_offset(load, tmp_path):
    records = [{"id": f"d{i}", "text": f"text {i}"} for i in range(10)]
    dataset = load(write_jsonl(tmp_path / "docs.jsonl", records)).dataset
    batches = list(iter_batches(dataset, 4, start=2))
    assert [b["id"] for b in batches] == [["d2", "d3", "d4", "d5"], ["d6", "d7", "d8", "d9"]]
    assert set(batches[0]) == {"id", "title", "text"}
    assert list(iter_batches(dataset, 4, start=10)) == []


def test_missing_field_names_file_and_fields(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"_id": "a", "text": "x"}])
    with pytest.raises(DocumentError, match=r"docs.jsonl: the records have no field 'id' \(their fields: _id, text\)"):
        load(path)


def test_record_without_id_names_the_record(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "x"}, {"text": "y"}])
    with pytest.raises(DocumentError, match=r"docs.jsonl: record 2 has no 'id' field"):
        load(path)


def test_record_without_text_names_record_and_id(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "x"}, {"id": "b"}, {"id": "c", "text": None}])
    with pytest.raises(DocumentError, match=r"docs.jsonl: record 2 \(id 'b'\) has no 'text' field"):
        load(path)


def test_a_nan_text_is_named_as_such(load, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": NaN}\n')
    with pytest.raises(DocumentError, match=r"record 2 \(id 'b'\) .*NaN"):
        load(path)


@pytest.mark.parametrize("bad_id", [1.5, True, ""])
def test_ids_that_are_neither_strings_nor_integers(load, tmp_path, bad_id):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "x"}, {"id": bad_id, "text": "y"}])
    with pytest.raises(DocumentError, match="record 2 has"):
        load(path)


def test_text_that_is_not_a_string(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": ["a", "list"]}])
    with pytest.raises(DocumentError, match=r"record 1 \(id 'a'\) has a list 'text' field"):
        load(path)


def test_duplicate_ids_are_counted_with_five_examples(load, tmp_path):
    records = [{"id": f"d{i % 7}", "text": "x"} for i in range(14)] + [{"id": "unique", "text": "y"}]
    with pytest.raises(DocumentError, match=r"7 ids occur more than once, e.g. 'd0' \(2 times\)") as err:
        load(write_jsonl(tmp_path / "docs.jsonl", records))
    assert str(err.value).count("times)") == 5


def test_duplicates_across_int_and_string_ids(load, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": 5, "text": "x"}, {"id": "5", "text": "y"}])
    with pytest.raises(DocumentError, match="1 ids occur more than once"):
        load(path)


def test_invalid_utf8_in_jsonl_names_the_line(load, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "bad \xff byte"}\n{"id": "c", "text": "ok"}\n')
    with pytest.raises(
        DocumentError,
        match=r"docs.jsonl: line 2 is not valid UTF-8 \(bad byte at column 26; "
        r"the line starts '\{\"id\": \"b\"",
    ):
        load(path)


def test_invalid_utf8_in_csv_names_the_line(load, tmp_path):
    path = tmp_path / "docs.csv"
    path.write_bytes(b"id,text\na,fine\nb,caf\xe9 au lait\nc,ok\n")
    with pytest.raises(DocumentError, match=r"docs.csv: line 3 is not valid UTF-8 \(bad byte at column 6"):
        load(path)


def test_malformed_json_names_the_file(load, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    with pytest.raises(DocumentError, match="docs.jsonl: line 2 is not valid JSON"):
        load(path)


def test_unknown_format_lists_the_supported_ones(load, tmp_path):
    path = tmp_path / "docs.xml"
    path.write_text("<docs/>")
    with pytest.raises(ValueError, match=r"unsupported input .*docs.xml \(suffix '.xml'\); supported: a .jsonl, .json"):
        load(path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="neither a BEIR folder nor a save_to_disk folder"):
        load(tmp_path / "folder")


def test_empty_file(load, tmp_path):
    (tmp_path / "docs.jsonl").write_text("")
    with pytest.raises(DocumentError, match="docs.jsonl is empty"):
        load(tmp_path / "docs.jsonl")


def test_missing_path(load, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load(tmp_path / "nope.jsonl")


def test_a_malformed_json_line_is_named_by_its_line_number(load, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y"}\n{"id": "c", text: broken}\n')
    with pytest.raises(DocumentError, match=r"bad.jsonl: line 4 is not valid JSON \(Expecting property name"):
        load(path)


def test_a_file_replaced_by_other_content_of_the_same_size_and_timestamp_is_read_anew(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": "aaaa bbbb"}) + "\n" for i in range(10)))
    before = path.stat()
    assert len(load_documents(path, FieldNames(), tmp_path / "cache").dataset) == 10
    body = "".join(json.dumps({"id": f"e{i}", "text": "x"}) + "\n" for i in range(9))
    path.write_text(body[:-1] + " " * (before.st_size - len(body)) + "\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert load_documents(path, FieldNames(), tmp_path / "cache").dataset["id"] == [f"e{i}" for i in range(9)]


def test_a_number_too_large_for_an_integer_id_is_named_with_the_cure(load, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "text": "x"}\n{"id": 123456789012345678901234567890, "text": "y"}\n')
    with pytest.raises(
        DocumentError,
        match=r"the ids were read as numbers.*past 64 bits.*\(record 2: 1\.2345678901234568e\+29\); write the ids",
    ):
        load(path)


@pytest.mark.parametrize("line, kind", [("[1, 2, 3]", "array"), ('"just text"', "string"), ("42", "number")])
def test_a_json_line_that_is_not_an_object_is_named(load, tmp_path, line, kind):
    path = tmp_path / "docs.jsonl"
    path.write_text(f"{line}\n{line}\n")
    with pytest.raises(DocumentError, match=f"line 1 is a JSON {kind}, not an object: each line must be one record"):
        load(path)


@pytest.mark.parametrize("content", ["null\n", "\n\nnull\n", 'null\n{"id": "a", "text": "x"}\n', "{}\n{}\n"])
def test_files_that_crashed_or_tracebacked_the_reader_are_refused_by_name(load, tmp_path, content):
    """Found by tests/test_properties.py: a first line of `null` made datasets' JSON reader segfault the process,
    and records with no fields raised datasets' bare ValueError."""
    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(DocumentError, match="is a JSON null, not an object|holds no records with any field"):
        load(path)
