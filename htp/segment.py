"""Sentence segmentation with spaCy and grouping of a text's tokens into HTP blocks."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import spacy
from spacy.language import Language

from htp.errors import EncoderValueError


def load_spacy(name: str) -> Language:
    """`sentencizer` is the rule-based splitter (no download); any other name is an installed spaCy pipeline."""
    if name == "sentencizer":
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    else:
        try:
            nlp = spacy.load(name, exclude=["ner", "lemmatizer", "textcat"])
        except OSError as err:
            raise EncoderValueError(
                f"spaCy pipeline {name!r} is not installed: install it as a package, or use encoder.spacy_model: "
                "sentencizer"
            ) from err
    nlp.max_length = 2 * PIECE_CHARS  # texts are segmented in pieces of at most PIECE_CHARS (Segmenter)
    return nlp


PIECE_CHARS = 1_000_000  # spaCy's own default max_length: longer texts are segmented piece by piece
CUT_WINDOW = 10_000  # a piece ends at the last sentence end (or white space) within this many characters of its limit


def pieces(text: str, limit: int) -> list[int]:
    """Where the pieces of `text` start (the first at 0), each at most `limit` characters: cut after the last
    sentence end (". ", "? ", "! ", a newline) near the limit, else after the last white space there, else at it."""
    starts, at = [0], 0
    while len(text) - at > limit:
        window = text[max(at + 1, at + limit - CUT_WINDOW) : at + limit]
        base = at + limit - len(window)
        ends = [window.rfind(mark) for mark in (". ", "? ", "! ", "\n")]
        cut = max(ends)
        if cut >= 0:
            at = base + cut + (1 if window[cut] == "\n" else 2)
        else:
            space = max(window.rfind(" "), window.rfind("\t"))
            at = base + space + 1 if space >= 0 else at + limit
        starts.append(at)
    return starts


class Segmenter:
    """Splits texts into sentence character spans, in batches through `nlp.pipe`."""

    def __init__(self, spacy_model: str = "sentencizer", batch_size: int = 64) -> None:
        self.nlp = load_spacy(spacy_model)
        self.batch_size = batch_size

    def sentence_starts(self, texts: Sequence[str]) -> list[list[int]]:
        """For each text, the character offsets where its sentences start (sorted, first is 0). A text longer
        than PIECE_CHARS is segmented in pieces cut at sentence ends, so no length is refused (spaCy's E088)."""
        cuts = [pieces(text, PIECE_CHARS) for text in texts]
        flat = [
            text[start:end] for text, starts in zip(texts, cuts) for start, end in zip(starts, [*starts[1:], len(text)])
        ]
        docs = iter(self.nlp.pipe(flat, batch_size=self.batch_size))
        out = []
        for starts in cuts:
            found = {0}
            for offset in starts:
                found |= {offset + sent.start_char for sent in next(docs).sents}
            out.append(sorted(found))
        return out


def token_sentence_ids(text: str, offsets: Sequence[tuple[int, int]], sentence_starts: Sequence[int]) -> list[int]:
    """Which sentence each token belongs to, by the token's first character that is not white space.

    A token that spans a sentence boundary belongs to the sentence of its own text, not of its white space:
    " The" (leading space) goes with the sentence "The" starts, and ".\n\n" (one token in Llama 3 and Qwen2
    vocabularies, where spaCy puts the newlines in the next sentence) stays with the sentence its period ends,
    so a block's last token is its end. An all-white-space token goes with its last character.
    """
    ids = []
    for start, end in offsets:
        piece = text[start:end]
        stripped = len(piece) - len(piece.lstrip())
        anchor = start + stripped if stripped < len(piece) else max(start, end - 1)
        ids.append(max(0, bisect.bisect_right(sentence_starts, anchor) - 1))
    return ids


def sentence_blocks(sentence_ids: Sequence[int], per_block: int) -> list[tuple[int, int]]:
    """Group runs of tokens of K consecutive sentences into [start, stop) token ranges."""
    blocks: list[tuple[int, int]] = []
    seen_sentences = 0
    current = None
    start = 0
    for i, sid in enumerate(sentence_ids):
        if sid != current:
            if current is not None:
                seen_sentences += 1
                if seen_sentences % per_block == 0:
                    blocks.append((start, i))
                    start = i
            current = sid
    if sentence_ids:
        blocks.append((start, len(sentence_ids)))
    return blocks


def token_blocks(n_tokens: int, interval: int) -> list[tuple[int, int]]:
    """Fixed-size token intervals (the paper's ablation of sentence blocks)."""
    return [(s, min(s + interval, n_tokens)) for s in range(0, n_tokens, interval)]


def adaptive_per_block(n_sentences: int, per_block: int, max_blocks: int) -> int:
    """Adaptive K: the smallest K >= the configured one that keeps the block count <= max_blocks.

    K = max(K0, ceil(n_sentences / max_blocks)); short texts keep K0, long ones get coarser blocks.
    """
    return max(per_block, math.ceil(n_sentences / max_blocks))


def make_blocks(
    text: str,
    offsets: Sequence[tuple[int, int]],
    sentence_starts: Sequence[int],
    mode: str,
    per_block: int,
    interval: int,
    max_blocks: int,
) -> list[tuple[int, int]]:
    """Token ranges of a text's blocks for a block mode: sentences, tokens or adaptive."""
    if mode == "tokens":
        return token_blocks(len(offsets), interval)
    sentence_ids = token_sentence_ids(text, offsets, sentence_starts)
    if mode == "adaptive":
        n_sentences = len(set(sentence_ids))
        per_block = adaptive_per_block(n_sentences, per_block, max_blocks)
    return sentence_blocks(sentence_ids, per_block)
