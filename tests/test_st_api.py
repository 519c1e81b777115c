"""HTPEncoder's sentence-transformers surface: encode_query / encode_document / encode(prompt_name=...) give the
vectors of encode(kind=...), shaped and typed as sentence-transformers shapes them; what cannot apply is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TEXTS = ["The cat sat on the mat. It was sunny.", "Stock markets fell sharply today.", "A library catalogue."]


def test_the_sentence_transformers_calls_give_the_same_vectors(make_encoder):
    encoder = make_encoder()
    queries, documents = encoder.encode(TEXTS, kind="query"), encoder.encode(TEXTS, kind="document")
    assert not np.allclose(queries, documents)  # the query prompt makes a difference
    assert np.allclose(encoder.encode_query(TEXTS), queries, atol=1e-6)
    assert np.allclose(encoder.encode_document(TEXTS), documents, atol=1e-6)
    assert np.allclose(encoder.encode(TEXTS, prompt_name="query"), queries, atol=1e-6)
    assert np.allclose(encoder.encode(TEXTS), documents, atol=1e-6)
    one = encoder.encode_query(TEXTS[1])
    assert one.shape == (encoder.get_sentence_embedding_dimension(),) and np.allclose(one, queries[1], atol=1e-5)
    assert np.allclose(np.linalg.norm(encoder.encode(TEXTS, normalize_embeddings=True), axis=1), 1, atol=1e-5)


def test_outputs_are_shaped_and_quantised_as_sentence_transformers_does(make_encoder):
    encoder = make_encoder()
    vectors = encoder.encode(TEXTS)
    tensor = encoder.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, torch.from_numpy(vectors), atol=1e-6)
    rows = encoder.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 3 and isinstance(rows[0], torch.Tensor)
    ubinary = encoder.encode(TEXTS, precision="ubinary")
    assert ubinary.dtype == np.uint8 and np.array_equal(ubinary, np.packbits(vectors > 0, axis=-1))
    binary = encoder.encode(TEXTS, precision="binary")
    assert binary.dtype == np.int8 and np.array_equal(binary.astype(np.int16) + 128, ubinary)
    int8 = encoder.encode(TEXTS, precision="int8")
    assert int8.dtype == np.int8 and int8.shape == vectors.shape
    columns = np.arange(vectors.shape[1])
    assert np.all(int8[np.argmin(vectors, axis=0), columns] == -128)  # each dimension's own range, as ST does
    assert np.all(int8[np.argmax(vectors, axis=0), columns] >= 126)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prompt": "Represent this:"}, "prompt= is not taken"),
        ({"truncate_dim": 8}, "truncate_dim is not taken"),
        ({"output_value": "token_embeddings"}, "output_value 'token_embeddings' is not offered"),
        ({"precision": "float16"}, "precision 'float16' is not one of"),
        ({"kind": "document", "prompt_name": "query"}, "disagree"),
        ({"device": "meta"}, "the model is loaded on cpu"),
    ],
)
def test_what_cannot_apply_is_refused_with_a_reason(make_encoder, options, message):
    encoder = make_encoder()
    with pytest.raises(ValueError, match=message):
        encoder.encode(TEXTS, **options)
    assert encoder.stats.seconds == 0  # refused before any forward pass


def test_a_device_is_compared_by_kind_and_index():
    from htp.encoder import _same_device

    cuda0, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert _same_device(torch.device("cuda"), cuda0) and _same_device(torch.device("cuda:0"), cuda0)
    assert not _same_device(torch.device("cuda:1"), cuda0) and not _same_device(torch.device("cuda"), cpu)
    assert _same_device(torch.device("cpu"), cpu)


def test_empty_input_gives_an_empty_result_of_the_vectors_width(make_encoder):
    """As sentence-transformers does: no texts, no rows, in every output form and precision."""
    encoder = make_encoder()
    width = encoder.get_sentence_embedding_dimension()
    assert encoder.encode_query([]).shape == (0, width) and encoder.encode_document([]).dtype == np.float32
    assert encoder.encode([], convert_to_tensor=True).shape == (0, width)
    assert encoder.encode([], precision="int8").shape == (0, width)
    assert encoder.encode([], precision="ubinary").shape == (0, width // 8)
    assert encoder.encode_layers([], [1, 2]).shape == (2, 0, width)


@pytest.mark.parametrize(
    "given, message",
    [
        ({"a": 1}, "got dict"),
        (None, "got NoneType"),
        (5, "got int"),
        (b"abc", r"got bytes \(decode it to str first\)"),
        (["fine", 3], "text 1 is int, not str"),
    ],
)
def test_input_that_is_no_text_is_refused_naming_what_was_given(make_encoder, given, message):
    from htp.errors import EncoderTypeError

    encoder = make_encoder()
    for call in (encoder.encode_query, encoder.encode_document, encoder.encode):
        with pytest.raises(EncoderTypeError, match=message):
            call(given)
