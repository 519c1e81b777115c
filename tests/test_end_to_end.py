"""End to end on the real default model: `htp build` over part of the bundled sample, then queries find
the relevant document, through the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main as cli_main
from pipeline.config import Config
from pipeline.ingest.builder import build
from pipeline.query.searcher import Searcher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MODULES = (
    "json",
    "zipfile",
    "random",
    "smtplib",
    "argparse",
    "csv",
    "sqlite3",
    "gzip",
    "heapq",
    "hashlib",
    "uuid",
    "socket",
    "re",
    "shutil",
    "threading",
    "datetime",
    "base64",
)
QUERIES = {
    "send an email message through a mail server": "smtplib",
    "read and write ZIP archive files": "zipfile",
    "generate pseudo-random numbers": "random",
    "a priority queue built on a heap": "heapq",
    "universally unique identifiers": "uuid",
    "secure hash and message digest algorithms": "hashlib",
}


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in (ROOT / "data" / "sample" / "corpus.jsonl").read_text().splitlines()]
    subset = [r for r in rows if r["_id"].split(".")[0] in MODULES]
    corpus = tmp_path_factory.mktemp("e2e") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in subset))
    out = corpus.parent / "index"
    summary = build(Config.load(ROOT / "config.yaml"), corpus, out)
    assert summary.documents == len(subset) > 40
    return out


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_queries_find_their_module(index_dir, mode):
    searcher = Searcher(index_dir, Config.load(ROOT / "config.yaml"))
    found = 0
    for question, module in QUERIES.items():
        top = [hit.id.split(".")[0] for hit in searcher.search(question, 3, mode=mode)]
        found += module in top
    assert found >= (4 if mode == "dense" else 5), f"{mode}: {found} of {len(QUERIES)} queries found their module"


def test_cli_query_prints_ranked_json(index_dir, capsys):
    assert cli_main(["query", str(index_dir), "read and write ZIP archive files", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["id"].startswith("zipfile")
    assert cli_main(["info", str(index_dir)]) == 0
    assert '"method": "htp"' in capsys.readouterr().out
