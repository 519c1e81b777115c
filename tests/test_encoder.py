"""The hooked fast path against an explicit layer-by-layer reference, batching invariance, copies, pooling."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from htp import EncoderConfig, HTPEncoder
from htp.layout import PLACEHOLDER
from htp.rewire import _output_hidden

TEXTS = [
    "The cat sat on the mat. It was a sunny day.",
    "Stock markets fell. Investors were worried! Why did it happen?",
    "A library stores books.",
]
LONG = " ".join(["Librarians index journals and records by subject. The park was sunny."] * 12)


def reference_embedding(encoder, text: str, kind: str = "document") -> np.ndarray:
    """Explicit loop over decoder layers, copies applied by hand one block at a time, causal and sliding-window
    masks built here, each layer given the mask and rotary embedding of its kind (Gemma 2/3 alternate them)."""
    layout = encoder.layouts([text], kind)[0]
    base = encoder.base
    ids = torch.tensor([[max(i, 0) for i in layout.ids]])
    with torch.no_grad():
        h = base.get_input_embeddings()(ids).clone()
        for position in layout.placeholders:
            h[0, position] = encoder.placeholder
        length = h.shape[1]
        positions = torch.arange(length)[None]
        settings = base.config
        kinds = getattr(settings, "layer_types", None) or ["full_attention"] * encoder.n_layers
        distance = positions[0][:, None] - positions[0][None, :]  # query minus key position
        window = getattr(settings, "sliding_window", None) or length
        masks = {"full_attention": distance < 0, "sliding_attention": (distance < 0) | (distance >= window)}
        masks = {
            kind: torch.zeros(length, length).masked_fill(hidden, float("-inf"))[None, None]
            for kind, hidden in masks.items()
        }
        per_kind = (
            "layer_type" in inspect.signature(base.rotary_emb.forward).parameters
        )  # Gemma 3: local and global RoPE
        rotary = {
            kind: base.rotary_emb(h, positions, kind) if per_kind else base.rotary_emb(h, positions)
            for kind in set(kinds)
        }
        start, stop = encoder.config.window
        for index in range(encoder.layers_run):
            if encoder.config.method in ("tp", "htp") and start <= index < stop:
                for pst, end in zip(layout.pst, layout.ends):
                    h[0, pst] = h[0, end]
                for bpst, pst in zip(layout.bpst, layout.pst):
                    h[0, bpst] = h[0, pst]
            kind = kinds[index]
            out = base.layers[index](
                h, attention_mask=masks[kind], position_embeddings=rotary[kind], position_ids=positions
            )
            h = _output_hidden(out)
        if encoder.config.final_norm:
            h = base.norm(h)
        if encoder.config.spec.pooling == "last":
            vector = h[0, layout.last]
        else:
            vector = h[0, layout.pooled].mean(dim=0)
    return torch.nn.functional.normalize(vector.float(), dim=-1).numpy()


@pytest.mark.parametrize("method", ["vanilla-last", "vanilla-mean", "echo", "tp", "htp"])
def test_fast_path_equals_reference_loop(make_encoder, method):
    encoder = make_encoder(method=method)
    fast = encoder.encode(TEXTS)
    for text, vector in zip(TEXTS, fast):
        assert np.abs(reference_embedding(encoder, text) - vector).max() < 1e-5


@pytest.mark.parametrize(
    "overrides",
    [
        dict(final_norm=True),
        dict(sentences_per_block=2),
        dict(block_mode="tokens", block_tokens=5),
        dict(query_prompt="Retrieve relevant document. Text:"),
    ],
)
def test_fast_path_equals_reference_with_options(make_encoder, overrides):
    encoder = make_encoder(**overrides)
    fast = encoder.encode(TEXTS, kind="query")
    for text, vector in zip(TEXTS, fast):
        assert np.abs(reference_embedding(encoder, text, kind="query") - vector).max() < 1e-5


@pytest.mark.parametrize("method", ["vanilla-mean", "echo", "tp", "htp"])
def test_alone_equals_batched_beside_longer_texts(make_encoder, method):
    encoder = make_encoder(method=method)
    alone = encoder.encode([TEXTS[2]])
    batched = encoder.encode([LONG, TEXTS[2], LONG + " More.", TEXTS[0]])
    assert np.abs(alone[0] - batched[1]).max() < 1e-5


def test_placeholders_hold_block_end_state_at_every_window_layer(make_encoder):
    encoder = make_encoder(window=(1, 4), exit_layer=-1)
    layout = encoder.layouts([TEXTS[1]])[0]
    assert len(layout.pst) == 3
    seen = []

    def capture(_module, args):
        seen.append(args[0][0].clone())

    # input_layernorm is the first thing each layer runs, after the layer's own pre-hooks (the copies).
    handles = [encoder.layers[i].input_layernorm.register_forward_pre_hook(capture) for i in range(encoder.n_layers)]
    try:
        encoder.encode([TEXTS[1]])
    finally:
        for handle in handles:
            handle.remove()
    for index, h in enumerate(seen):
        in_window = 1 <= index < 4
        for pst, end, bpst in zip(layout.pst, layout.ends, layout.bpst):
            assert torch.equal(h[pst], h[end]) == in_window
            assert torch.equal(h[bpst], h[end]) == in_window


def test_placeholders_never_enter_the_pooled_mean(make_encoder):
    encoder = make_encoder(exit_layer=-1)
    layout = encoder.layouts([TEXTS[0]])[0]
    assert not set(layout.pooled) & set(layout.placeholders)
    assert layout.ids[0] == encoder.bos_id and 0 not in layout.pooled
    exits = []
    handle = encoder.layers[-1].register_forward_hook(lambda _m, _a, out: exits.append(_output_hidden(out)[0].clone()))
    try:
        vector = encoder.encode([TEXTS[0]])[0]
    finally:
        handle.remove()
    hidden = exits[0]
    text_only = torch.nn.functional.normalize(hidden[layout.pooled].mean(0), dim=-1).numpy()
    with_placeholders = torch.nn.functional.normalize(
        hidden[layout.pooled + layout.placeholders].mean(0), dim=-1
    ).numpy()
    assert np.abs(vector - text_only).max() < 1e-6
    assert np.abs(vector - with_placeholders).max() > 1e-4


def test_literal_marker_strings_make_no_placeholders(make_encoder):
    encoder = make_encoder()
    text = "The <PST> cat. Sat on the <B-PST> mat."
    layout = encoder.layouts([text])[0]
    assert layout.ids.count(PLACEHOLDER) == 2 * len(layout.pst) == 4
    text_ids = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [layout.ids[p] for p in layout.pooled] == text_ids


@pytest.mark.parametrize("bad", ["", "   \n\t "])
def test_empty_text_is_a_clear_error(make_encoder, bad):
    encoder = make_encoder()
    with pytest.raises(ValueError, match="text 1 is empty or whitespace-only"):
        encoder.encode(["fine text.", bad])


def test_truncation_is_counted_and_bounded(make_encoder):
    encoder = make_encoder(max_length=40)
    vectors = encoder.encode([LONG, TEXTS[2]])
    assert vectors.shape == (2, encoder.dimension)
    assert encoder.stats.truncated == 1
    assert max(len(layout.ids) for layout in encoder.layouts([LONG])) <= 40


def test_an_edit_past_truncation_is_the_same_input_and_the_same_vector(make_encoder):
    encoder = make_encoder(max_length=40)
    tail = LONG + " This last sentence is never read."
    head = "A new first sentence here. " + LONG
    assert encoder.same_input([LONG, LONG, TEXTS[0]], [tail, head, TEXTS[1]]) == [True, False, False]
    assert np.abs(encoder.encode([tail])[0] - encoder.encode([LONG])[0]).max() < 1e-6


def test_vectors_are_unit_float32_and_in_input_order(make_encoder):
    encoder = make_encoder(batch_tokens=64, max_batch_size=2)
    texts = [LONG, TEXTS[0], TEXTS[1], TEXTS[2]]
    vectors = encoder.encode(texts)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, vector in zip(texts, vectors):
        assert np.abs(encoder.encode([text])[0] - vector).max() < 1e-5


def test_encode_layers_matches_encode_at_each_exit(make_encoder):
    encoder = make_encoder(exit_layer=3)
    many = encoder.encode_layers(TEXTS, [2, 3, -1])
    assert np.abs(many[1] - encoder.encode(TEXTS)).max() < 1e-6
    assert np.abs(many[2] - make_encoder(exit_layer=-1).encode(TEXTS)).max() < 1e-6


def test_bad_settings_are_refused(make_encoder):
    with pytest.raises(ValueError, match="exit layer 9"):
        make_encoder(exit_layer=9)
    with pytest.raises(ValueError, match="method"):
        make_encoder(method="mean")
    with pytest.raises(ValueError, match="kind"):
        make_encoder().encode(["x y"], kind="passage")


def test_mean_pooling_ignores_nan_and_inf_at_excluded_positions():
    from htp.pooling import mean_pool

    hidden = torch.ones(2, 4, 3)
    hidden[0, 3] = float("nan")
    hidden[1, 0] = float("inf")
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    pooled = mean_pool(hidden, weights)
    assert torch.isfinite(pooled).all() and torch.allclose(pooled, torch.ones(2, 3))


def tiny_bidirectional_gemma3(vocab: int):
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=512,
        sliding_window=16,
        use_bidirectional_attention=True,
    )
    return Gemma3TextModel(config).eval()


def test_a_bidirectional_model_gets_batch_independent_vectors_and_refuses_rewiring(tiny_tokenizer):
    model = tiny_bidirectional_gemma3(len(tiny_tokenizer))
    settings = dict(model="tiny", exit_layer=-1, window=(1, 3), max_length=256, batch_tokens=4096, max_padding=1.0)
    encoder = HTPEncoder(EncoderConfig(method="vanilla-mean", **settings), model=model, tokenizer=tiny_tokenizer)
    texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply on Tuesday after the report. Investors were worried.",
    ]
    together = encoder.encode(texts, batch_size=2)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    for method in ("htp", "tp"):
        with pytest.raises(ValueError, match="attends in both directions"):
            HTPEncoder(EncoderConfig(method=method, **settings), model=model, tokenizer=tiny_tokenizer)


def test_two_encoders_on_one_model_in_two_threads_see_only_their_own_hooks(make_encoder):
    import threading

    htp, vanilla = make_encoder(method="htp"), make_encoder(method="vanilla-mean", window=None)
    assert htp.model is vanilla.model
    expected = {"htp": htp.encode(TEXTS), "vanilla": vanilla.encode(TEXTS)}
    results: dict[str, list[np.ndarray]] = {"htp": [], "vanilla": []}

    def run(name, encoder):
        for _ in range(5):
            results[name].append(encoder.encode(TEXTS))

    threads = [threading.Thread(target=run, args=item) for item in (("htp", htp), ("vanilla", vanilla))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, runs in results.items():
        assert len(runs) == 5 and all(np.array_equal(r, expected[name]) for r in runs)


@pytest.mark.parametrize("method", ["vanilla-mean", "echo", "htp"])
def test_fine_tuned_embedder_format_matches_the_reference(make_encoder, tiny_tokenizer, method):
    encoder = make_encoder(method=method, pooling="last", append_eos=True, query_prompt="Instruct: find it\nQuery: ")
    for kind in ("document", "query"):
        layout = encoder.layouts([TEXTS[1]], kind)[0]
        assert layout.ids[layout.last] == tiny_tokenizer.eos_token_id and layout.last == len(layout.ids) - 1
        vector = encoder.encode([TEXTS[1]], kind=kind)[0]
        assert np.abs(reference_embedding(encoder, TEXTS[1], kind) - vector).max() < 1e-5
    mean_with_eos = make_encoder(method=method, append_eos=True)
    assert not np.allclose(mean_with_eos.encode(TEXTS[:1]), make_encoder(method=method).encode(TEXTS[:1]))


def test_optional_keys_stay_out_of_default_vector_settings():
    settings = EncoderConfig().vector_settings()
    assert "pooling" not in settings and "append_eos" not in settings
    assert EncoderConfig(model="e5-mistral-7b").vector_settings()["pooling"] == "last"
    assert EncoderConfig(model="e5-mistral-7b").resolved().exit_layer == 32


@pytest.mark.parametrize("exit_layer", [2, 4, -1])
def test_exit_read_out_equals_transformers_hidden_states(make_encoder, exit_layer):
    # transformers applies the final norm to its last hidden state only, so the last layer matches with final_norm
    encoder = make_encoder(method="vanilla-mean", exit_layer=exit_layer, window=None, final_norm=exit_layer == -1)
    layout = encoder.layouts([TEXTS[2]])[0]
    with torch.no_grad():
        states = encoder.base(input_ids=torch.tensor([layout.ids]), output_hidden_states=True).hidden_states
    expected = torch.nn.functional.normalize(states[encoder.layers_run][0, layout.pooled].mean(dim=0), dim=-1)
    assert np.abs(encoder.encode([TEXTS[2]])[0] - expected.numpy()).max() < 1e-5


@pytest.mark.parametrize("method", ["vanilla-mean", "echo", "tp", "htp"])
def test_cached_instruction_prefix_equals_the_uncached_path(make_encoder, method):
    prompt = "Retrieve relevant document. Text:"
    cached, uncached = (
        make_encoder(method=method, query_prompt=prompt),
        make_encoder(method=method, query_prompt=prompt, prefix_cache=False),
    )
    queries = [TEXTS[2], TEXTS[0], LONG]
    for _ in range(2):  # the second call reuses the stored keys and values
        assert np.abs(cached.encode(queries, kind="query") - uncached.encode(queries, kind="query")).max() < 1e-5
    head = cached.layouts(queries, "query")[0].head
    assert head == 1 + len(cached.prompts["query"]) and len(cached._prefixes) == 1
    assert cached.stats.computed_positions == uncached.stats.computed_positions - 2 * len(queries) * head


def test_a_query_is_separated_from_its_prompt_where_the_tokenizer_would_glue_them(make_encoder, tiny_tokenizer):
    prompt = "Retrieve relevant document. Text:"
    separated, glued = make_encoder(query_prompt=prompt), make_encoder(query_prompt=prompt, separate_prompt=False)
    assert separated.glues  # the tiny byte-level BPE starts a lone text without a word-start mark
    text = "The cat sat. It was sunny."
    spaced = tiny_tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    plain = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert spaced != plain
    for encoder, expected in ((separated, spaced), (glued, plain)):
        layout = encoder.layouts([text], "query")[0]
        assert [layout.ids[i] for i in layout.pooled] == expected and len(layout.pst) == 2  # two sentence blocks
        assert tiny_tokenizer.decode([layout.ids[layout.ends[0]]]).endswith(".")  # the first block ends its sentence
    document = separated.layouts([text], "document")[0]  # no document prompt: nothing to separate from
    assert [document.ids[i] for i in document.pooled] == plain
    assert np.abs(separated.encode([text], kind="query") - glued.encode([text], kind="query")).max() > 1e-4


def test_a_text_longer_than_spacy_takes_at_once_is_encoded(make_encoder):
    """1.5 million characters: segmented in two pieces, truncated to max_length tokens, one unit vector."""
    encoder = make_encoder()
    text = "The cat sat on the mat. " * 62_500
    vector = encoder.encode([text])[0]
    assert len(text) > 1_000_000 and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    assert encoder.stats.truncated == 1
