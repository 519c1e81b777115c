"""The mteb wrapper, run through `mteb.evaluate` itself on a retrieval task built here from a slice of CISI (no
hub), scores what `htp eval` scores on the same data with the same encoder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mteb
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from htp import HTPEncoder
from pipeline.config import Config
from pipeline.evaluation.beir import load_beir
from pipeline.evaluation.evaluate import EvalRequest, run_eval
from pipeline.integrations.mteb import HTPModel

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"


def cisi_slice(folder: Path, queries: int = 12, extra_docs: int = 120) -> Path:
    """A BEIR folder of CISI's first judged queries, the documents judged for them and some others."""
    data = load_beir(CISI)
    chosen = data.judged_query_ids()[:queries]
    judged = {doc for q in chosen for doc in data.qrels[q]}
    docs = [doc for doc in data.corpus if doc in judged] + [doc for doc in data.corpus if doc not in judged][
        :extra_docs
    ]
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc in docs:
            f.write(json.dumps({"_id": doc, **data.corpus[doc]}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for q in chosen:
            f.write(json.dumps({"_id": q, "text": data.queries[q]}) + "\n")
    rows = [f"{q}\t{doc}\t{score}" for q in chosen for doc, score in data.qrels[q].items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def local_task(folder: Path) -> AbsTaskRetrieval:
    """An mteb retrieval task over a BEIR folder on disk."""
    data = load_beir(folder)

    class LocalCISI(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="LocalCISISlice",
            description="A slice of CISI read from disk, for testing the HTP wrapper offline.",
            reference="https://ir.dcs.gla.ac.uk/resources/test_collections/cisi/",
            dataset={"path": "local/cisi-slice", "revision": "local"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=("1960-01-01", "1970-12-31"),
            domains=["Academic"],
            task_subtypes=[],
            license="not specified",
            annotations_creators="expert-annotated",
            dialect=[],
            sample_creation="found",
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs) -> None:
            corpus = [{"id": doc, "title": d["title"], "text": d["text"]} for doc, d in data.corpus.items()]
            queries = [{"id": q, "text": text} for q, text in data.queries.items()]
            split = RetrievalSplitData(
                corpus=Dataset.from_list(corpus),
                queries=Dataset.from_list(queries),
                relevant_docs=data.qrels,
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return LocalCISI()


def test_mteb_scores_what_htp_eval_scores(tiny_model_dir, tmp_path):
    folder = cisi_slice(tmp_path / "cisi-slice")
    base = Config()
    config = replace(
        base,
        encoder=replace(base.encoder, model=str(tiny_model_dir), device="cpu", max_length=128, exit_layer=-1),
        index=replace(base.index, center=False, calibrate=False, shard_size=64),  # mteb compares raw vectors
    )
    ours = run_eval(config, EvalRequest(dataset=folder, methods=["htp"], out=tmp_path / "eval", modes=["dense"]))
    model = HTPModel(HTPEncoder(replace(config.encoder, method="htp")))
    assert (
        model.mteb_model_meta.name.startswith("htp-index/") and model.mteb_model_meta.embed_dim == model.model.dimension
    )
    results = mteb.evaluate(model, local_task(folder), cache=None, show_progress_bar=False)
    theirs = results.task_results[0].scores["test"][0]["ndcg_at_10"]
    assert 0 < theirs < 1
    assert abs(100 * theirs - 100 * ours["results"]["htp"]["ndcg@10"]) <= 0.01
