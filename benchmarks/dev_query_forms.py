"""Do development queries written like real ones make calibration's verdicts agree with real queries? The
label-free development set asks each removed sentence as a query; here it is also asked as its content words
(BM25's own tokens: lower-cased, stopwords dropped), as the first 8 of them, or the first 4 (short keyword
queries), or as a search query or a question the decoder itself writes for the sentence (few-shot, greedy; its
cost is measured). For each form: calibration as shipped (penalty 1e-2, 2,000 pseudo-queries), what it chose, the
calibrated default's NDCG@10 x100 on the real queries, and the Spearman correlation between the development
set's order of 14 fusion options and the real queries' order. Reuses benchmarks.calibration's cached encodings.

    python -m benchmarks.dev_query_forms
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.calibration import Collection, collection_arguments
from benchmarks.common import write_report
from htp import EncoderConfig, HTPEncoder
from htp.models import resolve_model_source
from indexes.lexical import words
from pipeline.calibration import PENALTY

Form = Callable[[list[str]], list[str]]

# Few-shot prompts for the base decoder, with examples from no collection measured here (science, software,
# history), so that the forms are not fitted to either.
EXAMPLES = (
    "The mitochondria produce most of the chemical energy that a cell needs to power its reactions.",
    "Setting the timeout to zero disables the connection check entirely.",
    "The treaty was signed in 1648 and ended thirty years of war in central Europe.",
)
PROMPTS = {
    "decoder query": (
        "Each sentence below is followed by a short search query that someone looking for it might type.",
        "Query",
        ("what produces energy in a cell", "disable connection check timeout", "when did the thirty years war end"),
    ),
    "decoder question": (
        "Each sentence below is followed by a question that it answers.",
        "Question",
        (
            "Which part of a cell produces most of its energy?",
            "How can I turn off the connection check?",
            "How long did the war end by the treaty of 1648 last?",
        ),
    ),
}
BATCH = 16
NEW_TOKENS = 24


def content_words(limit: int | None) -> Form:
    """Sentences as their first `limit` content words (all when None); a sentence with none stays as it is."""

    def form(sentences: list[str]) -> list[str]:
        kept = [w[:limit] for w in words(sentences)]
        return [" ".join(k) if k else s for k, s in zip(kept, sentences)]

    return form


class DecoderWriter:
    """The encoder's own decoder, with its LM head, writing a query for each development sentence; the
    queries are cached as JSON per (sentences, prompt) and the seconds spent writing them are kept."""

    def __init__(self, model: str, cache: Path) -> None:
        source = resolve_model_source(model)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
        self.cache = cache
        self.seconds: dict[str, float] = {}
        self.samples: dict[str, list[tuple[str, str]]] = {}

    def form(self, label: str, tag: str) -> Form:
        """The form `label` of PROMPTS, its cost recorded under `tag` (the collection)."""
        head, field, answers = PROMPTS[label]
        shots = "".join(f"Sentence: {s}\n{field}: {a}\n\n" for s, a in zip(EXAMPLES, answers))

        def write(sentences: list[str]) -> list[str]:
            prompts = [f"{head}\n\n{shots}Sentence: {s}\n{field}:" for s in sentences]
            key = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]
            path = self.cache / f"{tag}-{label.replace(' ', '_')}-{key}.json"
            if not path.exists():
                began = time.perf_counter()
                written = {"queries": self._generate(prompts)}
                written["seconds"] = round(time.perf_counter() - began, 1)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(written))
                os.replace(tmp, path)
            written = json.loads(path.read_text())
            self.seconds[f"{tag} {label}"] = written["seconds"]
            self.samples[f"{tag} {label}"] = list(zip(sentences, written["queries"]))[:3]
            return [q or s for q, s in zip(written["queries"], sentences)]

        return write

    def _generate(self, prompts: list[str]) -> list[str]:
        """Greedy continuations, cut at the first line break."""
        queries = []
        for start in tqdm(range(0, len(prompts), BATCH), desc="writing queries"):
            batch = self.tokenizer(prompts[start : start + BATCH], return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = self.model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
            for row in out[:, batch.input_ids.shape[1] :]:
                queries.append(self.tokenizer.decode(row, skip_special_tokens=True).strip().split("\n")[0].strip())
        return queries


def forms(writer: DecoderWriter, tag: str) -> dict[str, Form | None]:
    """Every form measured, for one collection."""
    return {
        "sentence (shipped)": None,
        "content words": content_words(None),
        "first 8 content words": content_words(8),
        "first 4 content words": content_words(4),
        **{label: writer.form(label, tag) for label in PROMPTS},
    }


def main(argv: list[str] | None = None) -> None:
    args = collection_arguments(__doc__, "benchmarks/results/dev_query_forms.md").parse_args(argv)
    encoder = HTPEncoder(EncoderConfig(device="cpu"))
    writer = DecoderWriter(encoder.config.model, args.cache)
    rows = []
    for name in args.datasets.split(","):
        collection = Collection(args.data / name, args.cache, encoder, args.seed)
        for label, form in forms(writer, name).items():
            collection.at(encoder.layers_run, args.pseudo_queries, 200, args.seed, form)
            calibration = collection.fit(PENALTY, args.pseudo_queries, args.seed)
            settings = calibration.settings()
            rows.append(
                {
                    "collection": name,
                    "form": label,
                    "adapter_steps": settings["adapter_steps"],
                    "bias_weight": settings["bias_weight"],
                    "fusion": calibration.fusion.label,
                    "default": collection.ndcg(collection.hybrid(collection.dense(calibration), calibration.fusion)),
                    "spearman": collection.agreement(calibration)["spearman"],
                }
            )
            print(rows[-1], flush=True)
    lines = [
        f"Development queries in other forms ({encoder.config.model}, {encoder.dtype}; calibration as shipped). "
        "NDCG@10 x100 of the calibrated default on the real queries, test half (all in brackets); Spearman: the "
        "development set's order of 14 fusion options against the real queries' (all).",
        "",
        "| collection | development queries | adapter step | correction | fusion | default test (all) | Spearman |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['collection']} | {r['form']} | {r['adapter_steps']} | {r['bias_weight']} | {r['fusion']} | "
        f"{r['default']['test']:.2f} ({r['default']['all']:.2f}) | {r['spearman']:.2f} |"
        for r in rows
    ]
    lines += ["", "Seconds the decoder took to write the 200 development queries (float32, uncached run):", ""]
    lines += [f"- {tag}: {seconds:.1f} s" for tag, seconds in writer.seconds.items()]
    lines += ["", "The first three written, per collection and form:", ""]
    lines += [f"- {tag}: {s!r} -> {q!r}" for tag, pairs in writer.samples.items() for s, q in pairs]
    write_report(args.out, lines, {"rows": rows, "writing_seconds": writer.seconds, "samples": writer.samples})


if __name__ == "__main__":
    main()
