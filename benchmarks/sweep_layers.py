"""Choose the default model's exit layer, rewiring window, query prompt and centering on CISI's dev half.

Every exit layer comes from one forward pass per setting (embeddings at all depths, cached under
runs/cache). Settings are ranked by NDCG@10 on the development half of the judged queries; the
table also shows the test half, which takes no part in the choice.

    python -m benchmarks.sweep_layers --dataset ../shared/data/cisi
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.cache import cached_layers
from benchmarks.harness.tasks import dense_run, ndcg
from htp import EncoderConfig, HTPEncoder
from htp.models import load_model, pick_device
from indexes.lexical import build_bm25, search_bm25
from pipeline.evaluation.beir import BeirData, load_beir, split_queries
from pipeline.query.fusion import rrf
from pipeline.records import full_text
from pipeline.vectors import prepare

INSTRUCTION = "Retrieve relevant document. Text:"
FUSION_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
VARIANTS = [
    dict(method="vanilla-mean"),
    dict(method="htp", window=(1, 2)),
    dict(method="htp", window=(1, 4)),
    dict(method="htp", window=(1, 7)),
]


def label(variant: dict) -> str:
    window = variant.get("window")
    return variant["method"] + (f" [{window[0]},{window[1]})" if window else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/cisi"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_layers"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    data = load_beir(args.dataset)
    dev, test = split_queries(data, args.seed)
    dev_ids, test_ids = dev.judged_query_ids(), test.judged_query_ids()
    doc_ids = list(data.corpus)
    texts = [full_text(data.corpus[d].get("title"), data.corpus[d]["text"]) for d in doc_ids]
    query_ids = list(data.queries)
    query_texts = [data.queries[q] for q in query_ids]
    model, tokenizer = load_model("smollm2-135m", pick_device("cpu"), torch.float32)
    name = args.dataset.name
    rows, curves, runs = [], {}, {}
    for variant in VARIANTS:
        docs = cached_layers(
            args.cache,
            name,
            texts,
            EncoderConfig(**variant),
            "document",
            HTPEncoder(EncoderConfig(**variant), model, tokenizer),
        )
        for prompt in ("", INSTRUCTION):
            config = EncoderConfig(query_prompt=prompt, **variant)
            queries = cached_layers(
                args.cache, name, query_texts, config, "query", HTPEncoder(config, model, tokenizer)
            )
            for centered in (False, True):
                dev_curve, test_curve = [], []
                for layer in range(docs.shape[0]):
                    center = np.asarray(docs[layer]).mean(axis=0) if centered else None
                    run = dense_run(prepare(queries[layer], center), prepare(docs[layer], center), query_ids, doc_ids)
                    dev_curve.append(ndcg(data, dev_ids, run))
                    test_curve.append(ndcg(data, test_ids, run))
                best = int(np.argmax(dev_curve))
                key = f"{label(variant)} | prompt={'yes' if prompt else 'no'} | centered={'yes' if centered else 'no'}"
                center = np.asarray(docs[best]).mean(axis=0) if centered else None
                runs[key] = dense_run(prepare(queries[best], center), prepare(docs[best], center), query_ids, doc_ids)
                curves[key] = {"dev": dev_curve, "test": test_curve}
                rows.append(
                    {
                        "setting": key,
                        "exit_layer": best + 1,
                        "dev": dev_curve[best],
                        "test": test_curve[best],
                        "dev_last_layer": dev_curve[-1],
                        "test_last_layer": test_curve[-1],
                    }
                )
                print(
                    f"{key}: best exit layer {best + 1} dev {dev_curve[best]:.2f} test {test_curve[best]:.2f}",
                    flush=True,
                )
    best_htp = max((r for r in rows if r["setting"].startswith("htp")), key=lambda r: r["dev"])
    fusion = fusion_rows(data, dev_ids, test_ids, doc_ids, texts, query_ids, query_texts, runs[best_htp["setting"]])
    write(args.out, rows, curves, fusion, best_htp["setting"], len(dev_ids), len(test_ids), time.perf_counter() - began)


def fusion_rows(
    data: BeirData,
    dev_ids: list[str],
    test_ids: list[str],
    doc_ids: list[str],
    texts: list[str],
    query_ids: list[str],
    query_texts: list[str],
    dense: dict,
) -> list[dict]:
    """BM25 alone, then HTP + BM25 fused by reciprocal rank with several dense weights (BM25 weight 1)."""
    scores, rows = search_bm25(build_bm25(texts), query_texts, 100)
    lexical = {
        q: {doc_ids[r]: float(v) for v, r in zip(srow, rrow) if r >= 0}
        for q, srow, rrow in zip(query_ids, scores, rows)
    }
    out = [{"setting": "bm25", "dev": ndcg(data, dev_ids, lexical), "test": ndcg(data, test_ids, lexical)}]
    for weight in FUSION_WEIGHTS:
        fused = {q: dict(rrf([list(dense[q]), list(lexical[q])], [weight, 1.0], top=100)) for q in query_ids}
        out.append(
            {
                "setting": f"hybrid, dense weight {weight}",
                "dev": ndcg(data, dev_ids, fused),
                "test": ndcg(data, test_ids, fused),
            }
        )
    for row in out:
        print(f"{row['setting']}: dev {row['dev']:.2f} test {row['test']:.2f}", flush=True)
    return out


def cell(setting: str) -> str:
    """A setting key as a Markdown table cell (its ' | ' separators would split the cell)."""
    return setting.replace(" | ", ", ")


def write(
    out: Path,
    rows: list[dict],
    curves: dict,
    fusion: list[dict],
    fused_with: str,
    n_dev: int,
    n_test: int,
    seconds: float,
) -> None:
    """Markdown table (sorted by dev NDCG@10), JSON with every curve, and a plot of NDCG@10 against exit layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: -r["dev"])
    lines = [
        f"Chosen on {n_dev} dev queries, reported on {n_test} test queries; NDCG@10 x100; {seconds:.0f} s.",
        "",
        "| setting | best exit layer (dev) | dev | test | dev, last layer | test, last layer |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {cell(r['setting'])} | {r['exit_layer']} | {r['dev']:.2f} | {r['test']:.2f} | {r['dev_last_layer']:.2f} | "
        f"{r['test_last_layer']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Fusion with the best HTP setting on dev ({cell(fused_with)}), reciprocal rank fusion k=60:",
        "",
        "| setting | dev | test |",
        "|---|---|---|",
    ]
    lines += [f"| {r['setting']} | {r['dev']:.2f} | {r['test']:.2f} |" for r in fusion]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "curves.json").write_text(json.dumps({"rows": rows, "fusion": fusion, "curves": curves}, indent=1))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, curve in curves.items():
        if key.endswith("centered=yes") and "prompt=no" in key:
            ax.plot(range(1, len(curve["dev"]) + 1), curve["dev"], label=key.split(" |")[0])
    ax.set_xlabel("exit layer")
    ax.set_ylabel("NDCG@10 on dev queries (x100)")
    ax.set_title("CISI dev half, centred, no query prompt")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "layers.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
