"""Property-based checks of token layouts and unit checks of block grouping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from htp.config import METHOD_TABLE
from htp.layout import PLACEHOLDER, build_layout
from htp.segment import (
    Segmenter,
    adaptive_per_block,
    make_blocks,
    sentence_blocks,
    token_blocks,
)

BOS = 7
block_sizes = st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=12)


def blocks_of(sizes: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    ids, blocks, start = [], [], 0
    for size in sizes:
        ids += list(range(100 + start, 100 + start + size))
        blocks.append((start, start + size))
        start += size
    return ids, blocks


@settings(max_examples=300, deadline=None)
@given(
    sizes=block_sizes,
    max_length=st.integers(min_value=8, max_value=200),
    prompt=st.lists(st.integers(min_value=10, max_value=20), max_size=4),
    method=st.sampled_from(list(METHOD_TABLE)),
)
def test_layout_invariants(sizes, max_length, prompt, method):
    ids, blocks = blocks_of(sizes)
    layout = build_layout(METHOD_TABLE[method], ids, blocks, BOS, prompt, max_length)
    n = len(layout.ids)
    assert n <= max_length
    assert layout.ids[0] == BOS and 0 not in layout.pooled
    assert all(0 <= p < n for p in layout.pooled + layout.placeholders + layout.ends + [layout.last])
    assert not set(layout.pooled) & set(layout.placeholders)
    assert all(layout.ids[p] == PLACEHOLDER for p in layout.placeholders)
    assert layout.ids.count(PLACEHOLDER) == len(layout.placeholders)
    assert layout.truncated == (len(layout.pooled) < len(ids))
    for position in range(1, 1 + len(prompt)):
        assert position not in layout.pooled
    if method == "htp":
        assert len(layout.bpst) == len(layout.pst)
        assert max(layout.bpst) < min(layout.pst)
        bounds = layout.pst[1:] + [n]
        for pst, end, nxt in zip(layout.pst, layout.ends, bounds):
            assert pst < end < nxt  # each PST precedes its block, whose last token is the copy source
            assert all(layout.ids[p] != PLACEHOLDER for p in range(pst + 1, end + 1))
    if method in ("tp", "htp"):
        kept = [layout.ids[p] for p in layout.pooled]
        assert kept == ids[: len(kept)]


@settings(max_examples=200, deadline=None)
@given(sizes=block_sizes, max_length=st.integers(min_value=8, max_value=120))
def test_htp_truncation_drops_whole_trailing_blocks_first(sizes, max_length):
    ids, blocks = blocks_of(sizes)
    layout = build_layout(METHOD_TABLE["htp"], ids, blocks, BOS, [], max_length)
    survivors = [end - pst for pst, end in zip(layout.pst, layout.ends)]
    assert survivors[:-1] == sizes[: len(survivors) - 1]
    assert 1 <= survivors[-1] <= sizes[len(survivors) - 1]


def test_sentence_blocks_group_k_sentences():
    sentence_ids = [0, 0, 1, 1, 1, 2, 3, 3]
    assert sentence_blocks(sentence_ids, 1) == [(0, 2), (2, 5), (5, 6), (6, 8)]
    assert sentence_blocks(sentence_ids, 2) == [(0, 5), (5, 8)]
    assert sentence_blocks(sentence_ids, 9) == [(0, 8)]
    assert token_blocks(7, 3) == [(0, 3), (3, 6), (6, 7)]


def test_adaptive_k_caps_the_block_count():
    assert adaptive_per_block(10, 1, 64) == 1
    assert adaptive_per_block(200, 1, 64) == 4
    starts = list(range(0, 400, 4))  # 100 sentences of 4 characters, one token each
    offsets = [(i, i + 4) for i in range(0, 400, 4)]
    text = "abcd" * 100
    assert len(make_blocks(text, offsets, starts, "adaptive", 1, 32, 10)) == 10
    assert len(make_blocks(text, offsets, starts, "sentences", 1, 32, 10)) == 100


def test_spacy_sentencizer_and_token_mapping(tiny_tokenizer):
    text = "The cat sat. Stock markets fell! Why?"
    starts = Segmenter("sentencizer").sentence_starts([text])[0]
    assert starts == [0, 13, 33]
    encoded = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    blocks = make_blocks(text, encoded["offset_mapping"], starts, "sentences", 1, 32, 64)
    pieces = [tiny_tokenizer.decode(encoded["input_ids"][a:b]).strip() for a, b in blocks]
    assert pieces == ["The cat sat.", "Stock markets fell!", "Why?"]


def merged_punctuation_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE whose pre-tokenizer keeps punctuation with the newlines after it, as Llama 3's and
    Qwen2's do, so it learns single tokens such as '.\\n\\n' (no download)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r" ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+| ?\w+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["The cat sat.\n\nThe dog ran.\nBirds fly.\n\nFish swim."] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_blocks_end_at_the_sentence_end_with_merged_punctuation_tokens():
    tokenizer = merged_punctuation_tokenizer()
    text = "The cat sat.\n\nThe dog ran.\nBirds fly."
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    pieces = [text[a:b] for a, b in encoded["offset_mapping"]]
    assert ".\n\n" in pieces and ".\n" in pieces  # the merged tokens this test is about
    starts = Segmenter("sentencizer").sentence_starts([text])[0]
    blocks = make_blocks(text, encoded["offset_mapping"], starts, "sentences", 1, 32, 64)
    decoded = [tokenizer.decode(encoded["input_ids"][a:b]).strip() for a, b in blocks]
    assert decoded == ["The cat sat.", "The dog ran.", "Birds fly."]
    last_tokens = [pieces[b - 1].strip() for _, b in blocks]
    assert last_tokens == [".", ".", "."]


@settings(max_examples=200, deadline=None)
@given(
    sizes=block_sizes,
    max_length=st.integers(min_value=9, max_value=200),
    prompt=st.lists(st.integers(min_value=10, max_value=20), max_size=4),
    method=st.sampled_from(list(METHOD_TABLE)),
)
def test_an_appended_eos_closes_the_layout_one_budget_token_earlier(sizes, max_length, prompt, method):
    ids, blocks = blocks_of(sizes)
    plain = build_layout(METHOD_TABLE[method], ids, blocks, BOS, prompt, max_length - 1)
    closed = build_layout(METHOD_TABLE[method], ids, blocks, BOS, prompt, max_length, eos_id=999)
    n = len(plain.ids)
    assert closed.ids == plain.ids + [999] and len(closed.ids) <= max_length
    assert closed.pooled == plain.pooled + [n] and closed.last == n
    assert (closed.pst, closed.ends, closed.bpst, closed.truncated) == (
        plain.pst,
        plain.ends,
        plain.bpst,
        plain.truncated,
    )


def test_a_text_of_any_length_is_segmented_in_pieces_cut_at_sentence_ends(monkeypatch):
    """spaCy refuses texts past its max_length (E088 after 32 s on 10,000,000 characters); long texts are segmented
    piece by piece, cut at a sentence end, giving the sentences the whole text gives."""
    from htp import segment

    sentences = [f"Sentence number {i} says something about item {i % 7}." for i in range(400)]
    text = " ".join(sentences)
    whole = segment.Segmenter().sentence_starts([text])[0]
    monkeypatch.setattr(segment, "PIECE_CHARS", 1000)
    monkeypatch.setattr(segment, "CUT_WINDOW", 200)
    cut = segment.pieces(text, 1000)
    assert len(cut) >= 20 and all(b - a <= 1000 for a, b in zip(cut, cut[1:])) and len(text) - cut[-1] <= 1000
    assert all(text[at - 2 : at] == ". " for at in cut[1:])  # each piece ends with its sentence
    assert segment.Segmenter().sentence_starts([text, "Short one. Two."]) == [whole, [0, 11]]
    no_space = "x" * 2500
    assert segment.pieces(no_space, 1000) == [0, 1000, 2000]  # nothing to cut at: cut at the limit
    assert segment.Segmenter().sentence_starts([no_space]) == [[0, 1000, 2000]]  # a piece starts a sentence
