"""The encoder's dtype: `auto` takes bfloat16 on CPUs with native bfloat16 products, vectors stay float32 and close
to float32's, the manifest says which dtype built an index, and an index built in one dtype answers queries
encoded in the other."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_corpus
from htp import HTPEncoder
from htp.errors import EncoderValueError
from htp.models import cpu_has_native_bf16, pick_dtype
from pipeline.ingest.builder import build
from pipeline.query.searcher import Searcher

ZEN4 = "processor\t: 0\nflags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\nbugs\t\t: avx512_bf16_is_not_a_flag_here\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(ZEN4) and cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    assert not cpu_has_native_bf16(SKYLAKE) and not cpu_has_native_bf16("")


def test_auto_dtype_follows_the_cpu_and_explicit_dtypes_win():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert pick_dtype("float32", cpu) == torch.float32 and pick_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(EncoderValueError, match="not one of auto"):
        pick_dtype("int4", cpu)


def test_bfloat16_vectors_are_float32_and_close_to_float32(tiny_model, tiny_tokenizer, make_encoder):
    texts = [
        "The library catalogue lists every book. Each entry names the author.",
        "Stock market report for the protein industry. Prices rose sharply.",
    ]
    reference = make_encoder().encode(texts)
    rounded = copy.deepcopy(tiny_model).to(torch.bfloat16)  # the same weights, rounded to bfloat16
    half = HTPEncoder(make_encoder().config, model=rounded, tokenizer=tiny_tokenizer)
    assert half.dtype == "bfloat16"
    vectors = half.encode(texts)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() > 0.98 and not np.allclose(vectors, reference, atol=1e-6)


def test_manifest_records_the_dtype_and_other_dtypes_query_it(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    built = replace(config, encoder=replace(config.encoder, dtype="bfloat16"))
    summary = build(built, corpus)
    manifest = json.loads((summary.version_dir / "manifest.json").read_text())
    assert manifest["built_with"] == {"device": "cpu", "dtype": "bfloat16"}
    assert "dtype" not in manifest["encoder"]  # a runtime knob: the vector key is the same in every dtype
    index_dir = Path(config.paths.index_dir)
    half = Searcher(index_dir, built).search("library catalogue", 5, mode="dense")
    full = Searcher(index_dir, replace(config, encoder=replace(config.encoder, dtype="float32")))
    assert full.encoder.dtype == "float32"
    hits = full.search("library catalogue", 5, mode="dense")
    assert len(hits) == 5 and hits[0].id == half[0].id
    rebuilt = build(replace(config, encoder=replace(config.encoder, dtype="float32")), corpus)
    assert rebuilt.encoded == 0 and rebuilt.reused == 20  # stored bfloat16 vectors are reused, not re-encoded
