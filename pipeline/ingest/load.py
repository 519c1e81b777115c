"""Stage 1 of a build: read documents with Hugging Face `datasets`, validate them, and normalise to id/title/text."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputMissingError, PipelineValueError
from pipeline.metadata import metadata_json

# datasets is imported by the functions that read input, not here: it takes half a second, and `htp delete` (which
# reads no input file) imports this module through pipeline.ingest.context.
if TYPE_CHECKING:
    import datasets

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
TEXT_FORMATS = {".jsonl", ".json", ".csv"}
SUPPORTED = (
    "a .jsonl, .json, .parquet, .csv or .arrow file, a folder written by datasets' save_to_disk, "
    "or a BEIR folder holding corpus.jsonl"
)
BEIR_CORPUS = "corpus.jsonl"
DUPLICATE_EXAMPLES = 5
OUTPUT_FIELDS = ("id", "title", "text")


class DocumentError(PipelineValueError):
    """The input documents are malformed; the message names the file and the record."""


@dataclass(frozen=True)
class FieldNames:
    """Which record fields hold the id, the title (optional) and the text; BEIR folders always use _id/title/text."""

    id_field: str = "id"
    title_field: str | None = "title"
    text_field: str = "text"
    metadata: tuple[str, ...] | str = ()  # fields kept beside the text, or "all" (every field but id, title, text)
    metadata_optional: bool = False  # named fields no record has are left empty, not refused (a live change's)


BEIR_FIELDS = FieldNames(id_field="_id", title_field="title", text_field="text")


@dataclass
class LoadResult:
    """Validated documents (columns id, title, text: all strings, and `metadata`, one JSON object per document, when
    metadata fields were asked for), how many empty texts were skipped, where from, and the metadata fields kept."""

    dataset: datasets.Dataset
    skipped_empty: int
    source: str
    metadata_fields: tuple[str, ...] = ()


def load_documents(path: Path, fields: FieldNames, cache_dir: Path | None = None) -> LoadResult:
    """Load any SUPPORTED input as id/title/text strings: empty texts skipped and counted, other flaws DocumentError."""
    import datasets

    path = Path(path)
    file, fields, source = resolve_input(path, fields)
    raw = _read(file, fields, cache_dir)
    _check_fields(raw, file, fields)
    _check_utf8(raw, file)
    kept = metadata_fields(fields, raw.column_names, file)
    fields = replace(fields, metadata=kept)
    columns = OUTPUT_FIELDS + (("metadata",) if kept else ())
    normalised = raw.map(
        normaliser(fields, file),
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        features=datasets.Features({name: datasets.Value("string") for name in columns}),
        cache_file_name=str(_cache_file(file, fields, cache_dir)),
        load_from_cache_file=False,
        desc="normalise",
    )
    _check_duplicates(normalised, file)
    return LoadResult(normalised, len(raw) - len(normalised), source, kept)


def metadata_fields(fields: FieldNames, columns: list[str], file: Path) -> tuple[str, ...]:
    """The metadata fields to keep: those named (each must occur in the input), or with "all" every field but the
    id, title and text fields."""
    own = {fields.id_field, fields.title_field, fields.text_field}
    if fields.metadata == "all":
        return tuple(name for name in columns if name not in own)
    named = tuple(fields.metadata)
    clash = [name for name in named if name in own]
    if clash:
        raise DocumentError(f"data.metadata_fields names {clash}, which are the id, title or text fields")
    missing = [name for name in named if name not in columns]
    if fields.metadata_optional:
        return tuple(name for name in named if name in columns)
    if missing:
        raise DocumentError(
            f"{file}: no record has the metadata field(s) {missing} (the records' fields: {', '.join(columns)})"
        )
    return named


def iter_batches(dataset: datasets.Dataset, batch_size: int, start: int = 0) -> Iterator[dict[str, list]]:
    """Consecutive slices of `batch_size` rows from row `start`, as column -> list, without loading the rest."""
    if batch_size < 1:
        raise PipelineValueError(f"batch_size must be >= 1, got {batch_size}")
    for offset in range(start, len(dataset), batch_size):
        yield dataset[offset : offset + batch_size]


def resolve_input(path: Path, fields: FieldNames) -> tuple[Path, FieldNames, str]:
    """The file (or save_to_disk folder) to read, the field names that apply, and a description of the source."""
    if not path.exists():
        raise InputMissingError(f"no such file or folder: {path}")
    if path.is_dir():
        if (path / BEIR_CORPUS).is_file():
            return path / BEIR_CORPUS, BEIR_FIELDS, f"BEIR folder {path}"
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return path, fields, f"save_to_disk folder {path}"
        raise PipelineValueError(
            f"{path} is a folder but neither a BEIR folder nor a save_to_disk folder; supported: {SUPPORTED}"
        )
    if path.suffix.lower() not in BUILDERS:
        raise PipelineValueError(f"unsupported input {path} (suffix {path.suffix or 'none'!r}); supported: {SUPPORTED}")
    return path, fields, f"{path.suffix.lower().lstrip('.')} file {path}"


def _read(file: Path, fields: FieldNames, cache_dir: Path | None) -> datasets.Dataset:
    """Read with datasets' own builders, turning their errors into DocumentError naming the file."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    cache = str(cache_dir) if cache_dir else None
    if file.is_dir():
        loaded = datasets.load_from_disk(str(file))
        if isinstance(loaded, datasets.DatasetDict):
            raise PipelineValueError(
                f"{file} holds several splits ({', '.join(loaded)}); pass one of its split folders instead"
            )
        return loaded
    if file.stat().st_size == 0 or (file.suffix.lower() in TEXT_FORMATS and not _has_content(file)):
        raise DocumentError(f"{file} is empty (nothing but white space): there are no documents in it")
    if file.suffix.lower() == ".jsonl" and not _first_line_opens_an_object(file):
        _raise_bad_json_line(file)  # before datasets: a first line of `null` crashes its reader (a segfault)
    builder = BUILDERS[file.suffix.lower()]
    options: dict = {}
    if builder == "csv":
        # Read every field as the literal string: ids such as 007 stay as written and a text "NA" stays text.
        options = {"converters": {name: str for name in asdict(fields).values() if name}, "na_filter": False}
    try:
        # datasets' cache is keyed on the file's path, size and modification time, so a file replaced by other content
        # with the same ones (cp -p, a restored backup) would be served stale: always read the file itself, and skip
        # the check of the new split's size against the one recorded for the old content.
        return datasets.load_dataset(
            builder,
            data_files=str(file),
            split="train",
            cache_dir=cache,
            download_mode=datasets.DownloadMode.FORCE_REDOWNLOAD,
            verification_mode=datasets.VerificationMode.NO_CHECKS,
            **options,
        )
    except (DatasetGenerationError, UnicodeDecodeError, pa.ArrowInvalid) as err:
        if _is_utf8_error(err):
            _raise_bad_utf8(file, err)
        if file.suffix.lower() == ".jsonl":
            _raise_bad_json_line(file)
        cause = err.__cause__ or err
        raise DocumentError(f"cannot read {file}: {type(cause).__name__}: {cause}") from err
    except ValueError as err:
        if "corresponds to no data" not in str(err):  # datasets' word for a file whose records have no fields
            raise
        raise DocumentError(f"{file} holds no records with any field (each record needs an id and a text)") from err


def _raise_bad_json_line(file: Path) -> None:
    """Raise a DocumentError naming the first line of a JSON-lines file that is not JSON, or JSON other than an
    object (one record), counted from 1 (Arrow names a 0-based row within the block it was parsing, which is not a
    line of the file); returns if every line holds an object."""
    kinds = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    with file.open(encoding="utf-8") as f:
        for line, content in enumerate(f, start=1):
            if content.strip():
                try:
                    value = json.loads(content)
                except json.JSONDecodeError as err:
                    raise DocumentError(
                        f"{file}: line {line} is not valid JSON ({err.msg} at column {err.colno}; "
                        f"the line starts {content[:60]!r})"
                    ) from None
                if not isinstance(value, dict):
                    raise DocumentError(
                        f"{file}: line {line} is a JSON {kinds.get(type(value), 'value')}, not an object: each line "
                        'must be one record such as {"_id": "d1", "text": "..."}'
                    )


def _first_line_opens_an_object(file: Path) -> bool:
    """Whether a JSON-lines file's first line that is not blank starts with `{` (read up to that line only)."""
    with file.open("rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith(b"{")
    return True


def _has_content(file: Path) -> bool:
    """Whether a text file holds anything but white space (read until the first other byte)."""
    with file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            if chunk.strip():
                return True
    return False


def _is_utf8_error(err: BaseException | None) -> bool:
    """Whether an exception or anything in its cause chain is about invalid UTF-8."""
    while err is not None:
        if isinstance(err, UnicodeDecodeError) or (isinstance(err, pa.ArrowInvalid) and "UTF8" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _check_fields(raw: datasets.Dataset, file: Path, fields: FieldNames) -> None:
    """The id and text fields must exist; a missing title field just means empty titles."""
    missing = [name for name in (fields.id_field, fields.text_field) if name not in raw.column_names]
    if missing and file.suffix.lower() == ".jsonl":
        _raise_bad_json_line(file)  # a line that is no object may be read as a column named `text`
    if not missing and pa.types.is_floating(raw.data.table.schema.field(fields.id_field).type):
        ids = raw.data.table.column(fields.id_field).to_numpy(zero_copy_only=False)
        odd = [row for row, value in enumerate(ids) if not (abs(value) < 2**63 and float(value).is_integer())]
        row = odd[0] if odd else 0
        raise DocumentError(
            f"{file}: the ids were read as numbers with a fraction, as JSON readers read an integer past 64 bits or "
            f"one written with a decimal point (record {row + 1}: {float(ids[row])!r}); write the ids as strings"
        )
    if missing:
        raise DocumentError(
            f"{file}: the records have no field {' or '.join(map(repr, missing))} (their fields: "
            f"{', '.join(raw.column_names) or 'none'}); set data.id_field / data.text_field to the right names"
        )


def _check_utf8(raw: datasets.Dataset, file: Path) -> None:
    """Refuse invalid UTF-8 in string columns; datasets' JSON builder lets it through unchecked."""
    try:
        raw.data.table.validate(full=True)
    except pa.ArrowInvalid as err:
        _raise_bad_utf8(file, err)


def _raise_bad_utf8(file: Path, err: BaseException) -> None:
    """Raise a DocumentError naming the line with invalid UTF-8 (text files) or quoting Arrow (binary files)."""
    located = _first_bad_utf8_line(file) if file.suffix.lower() in TEXT_FORMATS else None
    if located is None:
        raise DocumentError(f"{file} holds text that is not valid UTF-8 ({err}); re-encode it as UTF-8") from err
    line, column, start = located
    raise DocumentError(
        f"{file}: line {line} is not valid UTF-8 (bad byte at column {column}; the line starts {start!r}); "
        "re-encode the file as UTF-8"
    ) from err


def _first_bad_utf8_line(file: Path) -> tuple[int, int, str] | None:
    """(line number, column, start of the line) of the first line that is not valid UTF-8, or None."""
    # datasets cannot say which record holds bad bytes (its JSON builder stores them unchecked, its CSV builder fails
    # inside pandas without a row number), so the raw bytes are scanned here for that one purpose.
    with file.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return number, err.start + 1, line[:60].decode("utf-8", errors="replace")
    return None


def normaliser(fields: FieldNames, file: Path) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
    """A batched map function: ids to strings, titles to strings ('' when absent), empty texts dropped."""

    def normalise(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        titles = batch[fields.title_field] if fields.title_field in batch else [None] * len(indices)
        out: dict[str, list] = {"id": [], "title": [], "text": [], **({"metadata": []} if fields.metadata else {})}
        for at, (row, raw_id, title, text) in enumerate(
            zip(indices, batch[fields.id_field], titles, batch[fields.text_field])
        ):
            doc_id = _doc_id(raw_id, row, file, fields)
            if text is None:
                raise DocumentError(
                    f"{file}: record {row + 1} (id {doc_id!r}) has no {fields.text_field!r} field value "
                    "(it is missing, null or NaN)"
                )
            if not isinstance(text, str):
                raise DocumentError(
                    f"{file}: record {row + 1} (id {doc_id!r}) has a {type(text).__name__} "
                    f"{fields.text_field!r} field; texts must be strings"
                )
            if text.strip():
                out["id"].append(doc_id)
                out["title"].append("" if title is None else str(title))
                out["text"].append(text)
                if fields.metadata:
                    values = {name: batch[name][at] for name in fields.metadata}
                    out["metadata"].append(metadata_json(values, f"{file}: record {row + 1} (id {doc_id!r})"))
        return out

    return normalise


def _doc_id(value: object, row: int, file: Path, fields: FieldNames) -> str:
    """A record's id as a string; strings and integers are accepted, anything else names the record."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        what = f"no {fields.id_field!r} field" if value is None else f"an id of type {type(value).__name__} ({value!r})"
        raise DocumentError(f"{file}: record {row + 1} has {what}; ids must be strings or integers")
    doc_id = str(value)
    if not doc_id.strip():
        raise DocumentError(f"{file}: record {row + 1} has an empty {fields.id_field!r} field")
    return doc_id


def _check_duplicates(dataset: datasets.Dataset, file: Path) -> None:
    """Ids must be unique: count repeats with pyarrow instead of Python sets, and list a few."""
    counts = pc.value_counts(dataset.data.table.column("id"))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        examples = ", ".join(
            f"{v['values']!r} ({v['counts']} times)" for v in repeated[:DUPLICATE_EXAMPLES].to_pylist()
        )
        raise DocumentError(f"{file}: {len(repeated)} ids occur more than once, e.g. {examples}; ids must be unique")


def _cache_file(file: Path, fields: FieldNames, cache_dir: Path | None) -> Path:
    """Where the normalised copy goes: under the cache, never beside the user's own files (save_to_disk folders)."""
    import datasets
    from datasets.fingerprint import Hasher

    root = Path(cache_dir) if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    key = Hasher.hash([str(file.resolve()), asdict(fields)])
    folder = root / "htp-index"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"documents-{key}.arrow"
