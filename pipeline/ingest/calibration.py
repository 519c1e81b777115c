"""Self-calibration from the corpus alone: pseudo-queries sampled from the documents fit a query adapter, a
query-side score correction and the hybrid fusion, with no labels and no network.

Two label-free sets are drawn from the documents (sentences that read like prose, 4-40 words):
- *training* pseudo-queries, each paired with the document it came from, fit the adapter `q + qW`
  (InfoNCE over the calibration corpus, penalty on W so it stays near the identity);
- *development* pseudo-queries, scored as an inverse cloze task: each is searched against a corpus where
  its own sentence was removed from its document, for BM25 and dense alike. A verbatim sentence would hand
  BM25 the answer (it finds its own sentence almost always), so a fusion weight chosen on such a set always
  picks BM25 alone; without the sentence both rankers must find the document from its context.
The development set early-stops the adapter and chooses the correction strength, each only when it beats the
plainer choice there. For the fusion it is read with its measured bias in mind: on both collections with real
queries here it rated dense lower against BM25 than real queries did, and ordered the fusion weights almost
unlike them (docs/concepts/calibration.md). So the fusion takes the most dense weight that the development set
cannot tell from its best option (a paired bootstrap over its queries), and no more: where dense clearly hurts
there, hybrid stays with BM25.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from indexes.lexical import build_bm25, search_bm25
from pipeline.errors import PipelineError
from pipeline.query.calibrated import Calibration
from pipeline.query.fusion import FusionChoice, fuse
from pipeline.vectors import prepare

MIN_WORDS, MAX_WORDS = 4, 40
MIN_QUERIES = 10  # fewer training or development pseudo-queries than this and calibration is skipped
PROSE_SHARE = 0.6  # at least this share of a pseudo-query's words are plain words (no code, numbers, paths)
TAU = 0.05  # InfoNCE temperature
PENALTY = 1e-2  # on ||W||^2; chosen with the pseudo-query count on CISI's and manpages-3's dev queries (docs/results)
DEPTH = 100  # candidates per ranking on the development set, as search.candidates
BIAS_WEIGHTS = (0.0, 0.5, 1.0)
NEGATIVES = 8192  # documents in the adapter's softmax: all of a smaller corpus, else the targets and a sample
# Score fusion (a convex combination of min-max normalised scores) with rising dense weight, BM25 alone first. It
# beat weighted RRF at the best weight on the real queries of both collections (docs/results), as in Bruch et al.,
# "An Analysis of Fusion Functions for Hybrid Retrieval" (2023); `search.fusion: rrf` still offers RRF.
FUSIONS = tuple(FusionChoice("score", w) for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5))
RESAMPLES = 2000  # paired bootstrap resamples of the development queries
CONFIDENCE = 0.95  # a heavier dense weight is refused when it is worse than the best with this confidence


class CalibrationSkipped(PipelineError):
    """The corpus cannot calibrate itself (too few prose sentences); the index is built without calibration."""


@dataclass(frozen=True)
class PseudoQuery:
    """A sentence of document `row` (characters [start, end) of its text) used as a query."""

    row: int
    start: int
    end: int
    text: str


@dataclass
class PseudoQueries:
    """Training pairs for the adapter and inverse-cloze development queries (from other documents)."""

    train: list[PseudoQuery]
    dev: list[PseudoQuery]


def query_like(sentence: str) -> bool:
    """A sentence that reads like a query: 4-40 words, mostly plain words."""
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    plain = sum(word.strip(".,;:!?()[]\"'").isalpha() for word in words)
    return plain >= PROSE_SHARE * len(words)


def sentence_spans(text: str, starts: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each query-like sentence, surrounding whitespace excluded."""
    spans = []
    for start, end in zip(starts, [*starts[1:], len(text)]):
        piece = text[start:end]
        left = start + len(piece) - len(piece.lstrip())
        right = start + len(piece.rstrip())
        if right > left and query_like(text[left:right]):
            spans.append((left, right))
    return spans


def sample_pseudo_queries(
    texts: Sequence[str], sentence_starts: Callable[[list[str]], list[list[int]]], count: int, dev_count: int, seed: int
) -> PseudoQueries:
    """Deterministic for a seed. Development queries come first, one per document from documents with at least
    two query-like sentences (so the document keeps some text of its own); training queries then take one
    sentence per remaining document in a seeded order, a second round if documents run out. When the development
    queries leave too few sentences to train on (a small corpus), the documents are split between the two in the
    proportion their counts ask for.

    A document's place in the order and its sentence choices depend only on the seed and its own text, so a
    corpus with a few documents added, edited or deleted draws nearly the same sample (and an incremental
    build finds nearly all of its encodings stored)."""
    order = sorted(range(len(texts)), key=lambda row: (seeded_hash(seed, texts[row]), row))
    rngs: dict[int, np.random.Generator] = {}
    spans: dict[int, list[tuple[int, int]]] = {}
    for chunk in range(0, len(order), 256):  # segment only as many documents as the sample needs
        rows = order[chunk : chunk + 256]
        for row, starts in zip(rows, sentence_starts([texts[r] for r in rows])):
            spans[row] = sentence_spans(texts[row], starts)
        seen = [r for r in order if r in spans]
        dev_rows = [r for r in seen if len(spans[r]) >= 2][:dev_count]
        chosen = set(dev_rows)
        if len(dev_rows) == dev_count and sum(len(spans[r]) for r in seen if r not in chosen) >= count:
            break

    spare = sum(len(spans[r]) for r in seen if r not in chosen)
    if spare < MIN_QUERIES and len(dev_rows) > MIN_QUERIES:
        # a small corpus: development queries, drawn first, left too few documents to train on; split the
        # documents in the proportion the two counts ask for instead, keeping MIN_QUERIES of each where it can
        share = dev_count / (dev_count + count)
        dev_rows = dev_rows[: max(MIN_QUERIES, min(len(dev_rows) - MIN_QUERIES, round(share * len(seen))))]

    def pick(row: int) -> PseudoQuery:
        rng = rngs.setdefault(row, np.random.default_rng([seed, seeded_hash(seed, texts[row])]))
        start, end = spans[row].pop(int(rng.integers(len(spans[row]))))
        return PseudoQuery(row, start, end, texts[row][start:end])

    dev = [pick(r) for r in dev_rows]
    taken = set(dev_rows)
    train: list[PseudoQuery] = []
    while len(train) < count:
        round_rows = [r for r in seen if r not in taken and spans[r]]
        if not round_rows:
            break
        for row in round_rows[: count - len(train)]:
            train.append(pick(row))
    return PseudoQueries(train, dev)


def seeded_hash(seed: int, text: str) -> int:
    """A 64-bit hash of a seed and a text (stable across processes, unlike hash()): samples drawn by it keep an
    item in or out on its own, whatever else the corpus holds."""
    return int(hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()[:16], 16)


def without_sentence(text: str, query: PseudoQuery) -> str:
    """The document with the pseudo-query's sentence cut out (inverse cloze)."""
    return (text[: query.start].rstrip() + " " + text[query.end :].lstrip()).strip()


def target_ndcg(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean NDCG@10 when each query has exactly one relevant document, from a [queries, docs] score matrix."""
    # With one relevant document NDCG@10 is 1/log2(1 + rank) for rank <= 10: computed in closed form here,
    # inside training loops, where building ranx runs for every check would cost more than the training.
    own = scores[np.arange(len(targets)), targets][:, None]
    ranks = 1 + (scores > own).sum(axis=1)
    return float(np.mean(np.where(ranks <= 10, 1 / np.log2(1 + ranks), 0.0)))


def ranking_gains(rankings: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """NDCG@10 of each ranked row list, one relevant row per query (per query, for the paired bootstrap)."""
    gains = []
    for ranked, target in zip(rankings, targets):
        top = list(ranked[:10])
        gains.append(1 / math.log2(2 + top.index(target)) if target in top else 0.0)
    return np.array(gains, dtype=np.float64)


def ranking_ndcg(rankings: Sequence[Sequence[int]], targets: Sequence[int]) -> float:
    """Mean NDCG@10 of ranked row lists, one relevant row per query."""
    return float(ranking_gains(rankings, targets).mean()) if len(targets) else 0.0


def choose_fusion(gains: dict[FusionChoice, np.ndarray], seed: int) -> tuple[FusionChoice, FusionChoice]:
    """(chosen, best): from the option the development set rates best, step up in dense weight while a paired
    bootstrap over the development queries cannot say the heavier option is worse than the best one.

    `gains` holds per-query NDCG of each option, in rising dense weight. Ties keep the lighter option as best."""
    options = list(gains)
    best = max(options, key=lambda choice: gains[choice].mean())
    count = len(gains[best])
    picks = np.random.default_rng(seed).integers(0, count, size=(RESAMPLES, count))
    chosen = best
    for choice in options[options.index(best) + 1 :]:
        losses = (gains[best] - gains[choice])[picks].mean(axis=1)
        if (losses > 0).mean() >= CONFIDENCE:
            break
        chosen = choice
    return chosen, best


def fit_adapter(
    queries: np.ndarray,
    targets: np.ndarray,
    docs: np.ndarray,
    dev_queries: np.ndarray,
    dev_targets: np.ndarray,
    dev_docs: np.ndarray,
    penalty: float,
    seed: int,
    steps: int = 300,
    check_every: int = 10,
    lr: float = 1e-3,
) -> tuple[np.ndarray | None, dict]:
    """Fit W in q + qW by InfoNCE (softmax over `docs`, temperature TAU, `penalty` * ||W||^2), keeping the W that
    scores best on the development set; None when no step beats the identity there. Over more than NEGATIVES
    documents the softmax runs over the targets and a seeded sample of the rest: each step's cost stays that of
    a NEGATIVES-document corpus however large the sample calibration draws."""
    torch.manual_seed(seed)
    docs, targets = _softmax_documents(docs, np.asarray(targets, dtype=np.int64), seed)
    q, d = torch.from_numpy(np.ascontiguousarray(queries)), torch.from_numpy(np.ascontiguousarray(docs))
    t = torch.from_numpy(targets)
    weight = torch.zeros(q.shape[1], q.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([weight], lr=lr)
    best_score, best, best_step = target_ndcg(dev_queries @ dev_docs.T, dev_targets), None, 0
    start_score = best_score
    for step in range(1, steps + 1):
        adapted = torch.nn.functional.normalize(q + q @ weight, dim=1)
        loss = torch.nn.functional.cross_entropy(adapted @ d.T / TAU, t) + penalty * weight.square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % check_every == 0:
            w = weight.detach().numpy()
            score = target_ndcg(prepare(dev_queries + dev_queries @ w, None) @ dev_docs.T, dev_targets)
            if score > best_score:
                best_score, best, best_step = score, w.copy(), step
            elif step - best_step >= 5 * check_every:
                break
    return best, {"dev_ndcg_identity": start_score, "dev_ndcg_adapter": best_score, "adapter_steps": best_step}


def _softmax_documents(docs: np.ndarray, targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents the adapter's softmax runs over, and the targets as rows of them: all documents when there
    are at most NEGATIVES, else every target and a seeded uniform sample of the others, in corpus order."""
    if len(docs) <= NEGATIVES:
        return docs, targets
    wanted = np.unique(targets)
    others = np.setdiff1d(np.arange(len(docs)), wanted)
    extra = np.random.default_rng(seed).choice(others, size=max(NEGATIVES - len(wanted), 0), replace=False)
    rows = np.sort(np.concatenate([wanted, extra]))
    return docs[rows], np.searchsorted(rows, targets)


def _top_scored(scores: np.ndarray, depth: int) -> list[list[tuple[int, float]]]:
    """The best `depth` (row, score) per query row of a score matrix, best first."""
    depth = min(depth, scores.shape[1])
    part = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    rows, values = np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)
    return [list(zip(r.tolist(), v.tolist())) for r, v in zip(rows, values)]


def fusion_gains(
    calibration: Calibration,
    dev_queries: np.ndarray,
    dev_targets: np.ndarray,
    dev_docs: np.ndarray,
    dev_bm25: Sequence[Sequence[tuple[int, float]]],
    options: Sequence[FusionChoice],
) -> dict[FusionChoice, np.ndarray]:
    """Per-query development NDCG@10 of each fusion option, the dense side calibrated as `calibration` says."""
    dense = _top_scored(calibration.queries(dev_queries) @ dev_docs.T, DEPTH)
    return {
        choice: ranking_gains(
            [[r for r, _ in fuse(d, b, choice, DEPTH)] for d, b in zip(dense, dev_bm25)], dev_targets.tolist()
        )
        for choice in options
    }


def fit(
    train_queries: np.ndarray,
    train_targets: np.ndarray,
    docs: np.ndarray,
    dev_queries: np.ndarray,
    dev_targets: np.ndarray,
    dev_docs: np.ndarray,
    dev_bm25: Sequence[Sequence[tuple[int, float]]] | None,
    penalty: float = PENALTY,
    seed: int = 0,
) -> Calibration:
    """Choose adapter, correction and fusion on the development set from prepared (centred, unit) vectors.

    `docs` are the calibration corpus's vectors; `dev_docs` the same with each development query's sentence
    removed from its document; `dev_bm25` the BM25 ranking (row, score) of each development query over that
    same edited corpus, or None when the index has no BM25 part.
    """
    adapter, report = fit_adapter(train_queries, train_targets, docs, dev_queries, dev_targets, dev_docs, penalty, seed)
    adapted = Calibration(adapter, np.zeros(docs.shape[1], np.float32), 0.0, FUSIONS[0])
    query_mean = prepare(adapted.queries(train_queries).mean(axis=0, keepdims=True), None)[0]
    best_bias, best_score = 0.0, -1.0
    for weight in BIAS_WEIGHTS:  # ascending: a stronger correction must do strictly better
        trial = Calibration(adapter, query_mean, weight, FUSIONS[0])
        score = target_ndcg(trial.queries(dev_queries) @ dev_docs.T, dev_targets)
        report[f"dev_ndcg_bias_{weight}"] = score
        if score > best_score:
            best_bias, best_score = weight, score
    calibration = Calibration(adapter, query_mean, best_bias, FUSIONS[0], report)
    if dev_bm25 is not None:
        gains = fusion_gains(calibration, dev_queries, dev_targets, dev_docs, dev_bm25, FUSIONS)
        report.update({f"dev_ndcg_{choice.label}": float(g.mean()) for choice, g in gains.items()})
        calibration.fusion, best = choose_fusion(gains, seed)
        report["dev_best_fusion"] = best.label
    return calibration


Encode = Callable[[list[str], str], np.ndarray]
SameInput = Callable[[list[str], list[str]], list[bool]]


@dataclass
class CalibrationData:
    """Prepared vectors and rankings that `fit` chooses from (kept apart so benchmarks can reuse them)."""

    sample: PseudoQueries
    train_queries: np.ndarray
    dev_queries: np.ndarray
    dev_docs: np.ndarray
    dev_bm25: list[list[tuple[int, float]]] | None
    dev_documents_encoded: int

    @property
    def train_targets(self) -> np.ndarray:
        return np.array([q.row for q in self.sample.train], dtype=np.int64)

    @property
    def dev_targets(self) -> np.ndarray:
        return np.array([q.row for q in self.sample.dev], dtype=np.int64)


def calibration_data(
    texts: Sequence[str],
    docs: np.ndarray,
    center: np.ndarray | None,
    encode: Encode,
    sentence_starts: Callable[[list[str]], list[list[int]]],
    pseudo_queries: int,
    dev_queries: int,
    seed: int,
    bm25: bool,
    same_input: SameInput | None = None,
) -> CalibrationData:
    """Sample pseudo-queries, encode them as queries, re-encode the development documents without their
    sentence, and rank the development queries with BM25 over that edited corpus.

    `same_input(originals, edited)` says which edits the encoder cannot see (the sentence lies past a long
    document's truncation point): those documents keep their stored vector instead of being encoded again."""
    sample = sample_pseudo_queries(texts, sentence_starts, pseudo_queries, dev_queries, seed)
    if len(sample.train) < MIN_QUERIES or len(sample.dev) < MIN_QUERIES:
        counts = (("training", len(sample.train)), ("development", len(sample.dev)))
        short = " and ".join(kind for kind, drawn in counts if drawn < MIN_QUERIES)
        raise CalibrationSkipped(
            f"too few {short} pseudo-queries: {len(sample.train)} training and {len(sample.dev)} development ones "
            f"could be drawn from {len(texts)} documents, and {MIN_QUERIES} of each are needed (a pseudo-query is "
            "a sentence of 4-40 mostly plain words; a development one comes from a document with at least two)"
        )
    train = prepare(encode([q.text for q in sample.train], "query"), center)
    dev = prepare(encode([q.text for q in sample.dev], "query"), center)
    edited = [without_sentence(texts[q.row], q) for q in sample.dev]
    rows = [q.row for q in sample.dev]
    dev_docs = np.array(docs, dtype=np.float32, copy=True)
    unseen = same_input([texts[row] for row in rows], edited) if same_input else [False] * len(rows)
    changed = [i for i, same in enumerate(unseen) if not same]
    if changed:
        dev_docs[[rows[i] for i in changed]] = prepare(encode([edited[i] for i in changed], "document"), center)
    dev_bm25 = None
    if bm25:
        corpus = list(texts)
        for row, text in zip(rows, edited):
            corpus[row] = text
        scores, hits = search_bm25(build_bm25(corpus), [q.text for q in sample.dev], DEPTH)
        dev_bm25 = [[(int(r), float(s)) for r, s in zip(hr, sr) if r >= 0] for hr, sr in zip(hits, scores)]
    return CalibrationData(sample, train, dev, dev_docs, dev_bm25, len(changed))


def calibrate(
    texts: Sequence[str],
    docs: np.ndarray,
    center: np.ndarray | None,
    encode: Encode,
    sentence_starts: Callable[[list[str]], list[list[int]]],
    pseudo_queries: int,
    dev_queries: int,
    seed: int,
    bm25: bool,
    same_input: SameInput | None = None,
) -> Calibration:
    """Everything calibration does, from the calibration corpus's texts and prepared vectors."""
    began = time.perf_counter()
    data = calibration_data(
        texts, docs, center, encode, sentence_starts, pseudo_queries, dev_queries, seed, bm25, same_input
    )
    calibration = fit(
        data.train_queries,
        data.train_targets,
        docs,
        data.dev_queries,
        data.dev_targets,
        data.dev_docs,
        data.dev_bm25,
        seed=seed,
    )
    calibration.report.update(
        pseudo_queries=len(data.sample.train),
        dev_queries=len(data.sample.dev),
        dev_documents_encoded=data.dev_documents_encoded,
        documents=len(texts),
        seed=seed,
        seconds=round(time.perf_counter() - began, 1),
    )
    return calibration
