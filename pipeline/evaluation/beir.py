"""BEIR-format test collections (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), with every inconsistency counted."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from pipeline.errors import InputMissingError, PipelineValueError
from pipeline.ingest.load import DocumentError, FieldNames, load_documents

log = logging.getLogger(__name__)

QUERY_FIELDS = FieldNames(id_field="_id", title_field=None, text_field="text")
QRELS_COLUMNS = ("query-id", "corpus-id", "score")


@dataclass
class BeirData:
    """Corpus (id -> {title, text}), queries (id -> text), qrels (query id -> {doc id: relevance}) and problem
    counts."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    problems: dict[str, int] = field(default_factory=dict)

    def judged_query_ids(self) -> list[str]:
        """Queries with at least one relevant (score > 0) judgement, in queries-file order: the ones to evaluate."""
        return [qid for qid in self.queries if any(score > 0 for score in self.qrels.get(qid, {}).values())]

    def restricted(self, query_ids: list[str]) -> BeirData:
        """The same corpus with only these queries and their judgements."""
        return BeirData(
            self.corpus,
            {q: self.queries[q] for q in query_ids},
            {q: self.qrels[q] for q in query_ids if q in self.qrels},
            dict(self.problems),
        )


def load_beir(folder: Path, split: str = "test", cache_dir: Path | None = None) -> BeirData:
    """Read a BEIR folder; qrels rows naming unknown queries or documents are dropped, counted and warned about."""
    folder = Path(folder)
    qrels_file = folder / "qrels" / f"{split}.tsv"
    for needed in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_file):
        if not needed.is_file():
            splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
            raise InputMissingError(
                f"{folder} is not a BEIR folder with split {split!r}: {needed} is missing "
                f"(qrels splits present: {', '.join(splits) or 'none'})"
            )
    corpus_docs = load_documents(folder, FieldNames(), cache_dir)
    corpus = {i: {"title": t, "text": x} for i, t, x in zip(*(corpus_docs.dataset[c] for c in ("id", "title", "text")))}
    query_docs = load_documents(folder / "queries.jsonl", QUERY_FIELDS, cache_dir)
    queries = dict(zip(query_docs.dataset["id"], query_docs.dataset["text"]))
    qrels, problems = _read_qrels(qrels_file, queries, corpus, cache_dir)
    problems = {"empty_documents": corpus_docs.skipped_empty, "empty_queries": query_docs.skipped_empty, **problems}
    found = {name: count for name, count in problems.items() if count}
    if found:
        log.warning("%s: %s", folder, ", ".join(f"{name}: {count}" for name, count in found.items()))
    return BeirData(corpus, queries, qrels, problems)


def _read_qrels(
    file: Path, queries: dict[str, str], corpus: dict[str, dict[str, str]], cache_dir: Path | None
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Qrels as nested dicts, keeping only rows whose query and document exist; the rest are counted."""
    table = datasets.load_dataset(
        "csv",
        data_files=str(file),
        split="train",
        delimiter="\t",
        cache_dir=str(cache_dir) if cache_dir else None,
        converters={"query-id": str, "corpus-id": str},
        na_filter=False,
    )
    missing = [c for c in QRELS_COLUMNS if c not in table.column_names]
    if missing:
        raise DocumentError(
            f"{file}: no column {', '.join(missing)}; BEIR qrels need a tab-separated header "
            f"{', '.join(QRELS_COLUMNS)} (columns found: {', '.join(table.column_names)})"
        )
    qrels: dict[str, dict[str, int]] = {}
    problems = {
        "qrels_query_not_in_queries": 0,
        "qrels_doc_not_in_corpus": 0,
        "qrels_rows_dropped": 0,
        "qrels_duplicate_rows": 0,
    }
    for qid, docid, score in zip(*(table[c] for c in QRELS_COLUMNS)):
        unknown_query, unknown_doc = qid not in queries, docid not in corpus
        problems["qrels_query_not_in_queries"] += unknown_query
        problems["qrels_doc_not_in_corpus"] += unknown_doc
        if unknown_query or unknown_doc:
            problems["qrels_rows_dropped"] += 1
            continue
        if docid in qrels.get(qid, {}):
            problems["qrels_duplicate_rows"] += 1
            continue
        qrels.setdefault(qid, {})[docid] = int(score)
    return qrels, problems


def sample_queries(data: BeirData, n: int, seed: int) -> BeirData:
    """A seeded random sample of `n` judged queries (all, if fewer); the whole corpus stays, so every relevant doc
    does."""
    judged = data.judged_query_ids()
    chosen = set(random.Random(seed).sample(judged, min(n, len(judged))))
    return data.restricted([q for q in judged if q in chosen])


def split_queries(data: BeirData, seed: int, fraction: float = 0.5) -> tuple[BeirData, BeirData]:
    """Deterministic (dev, test) split of the judged queries, `fraction` of them in dev, for tuning without leakage."""
    if not 0 < fraction < 1:
        raise PipelineValueError(f"fraction must be between 0 and 1, got {fraction}")
    judged = data.judged_query_ids()
    shuffled = random.Random(seed).sample(judged, len(judged))
    dev = set(shuffled[: round(fraction * len(judged))])
    return data.restricted([q for q in judged if q in dev]), data.restricted([q for q in judged if q not in dev])
