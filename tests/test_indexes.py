"""indexes/: factory choice and checks, FAISS wrappers against raw FAISS, versioned folders, BM25."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest

from indexes.factory import choose_factory, resolve_factory
from indexes.faiss_index import build_faiss, search_faiss
from indexes.lexical import build_bm25, search_bm25
from indexes.store import Manifest, open_index, write_version

DIM = 32


def clustered(n: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIM))
    vectors = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def manifest(count: int) -> Manifest:
    return Manifest(model="m", method="htp", exit_layer=-2, window=[1, 7], dimension=DIM, metric="inner_product",
                    count=count, factory="Flat", config_hash="h", encoder={}, package_versions={})


def flat(vectors: np.ndarray) -> faiss.Index:
    return build_faiss("Flat", DIM, [vectors[: len(vectors) // 2], vectors[len(vectors) // 2:]], None)


def docs(ids: list[str]) -> pa.Table:
    return pa.table({"id": ids, "title": [f"t{i}" for i in ids], "text": [f"text of {i}" for i in ids]})


def test_auto_factory_follows_size_and_budget():
    assert choose_factory(5_000, 576, 2**30) == "Flat"
    assert choose_factory(200_000, 576, 2**30) == "HNSW32"
    assert choose_factory(200_000, 576, 2**27).startswith("IVF")
    big = choose_factory(5_000_000, 576, 2**32)
    nlist, m = int(big.split(",")[0][3:]), int(big.split("PQ")[1])
    assert 4096 <= nlist <= 16384 and 576 % m == 0 and m <= 144
    with pytest.raises(ValueError, match="memory_budget_mb"):
        choose_factory(5_000_000, 576, 1000)


def test_bad_factory_strings_are_named():
    with pytest.raises(ValueError, match="'IVFx,Flat'"):
        resolve_factory("IVFx,Flat", 1000, DIM, 2**30)
    with pytest.raises(ValueError, match="needs at least 4096 vectors"):
        resolve_factory("IVF4096,Flat", 1000, DIM, 2**30)
    assert resolve_factory("HNSW16", 1000, DIM, 2**30) == "HNSW16"


def test_open_index_search_is_identical_to_raw_faiss(tmp_path):
    vectors, queries = clustered(500), clustered(20, seed=1)
    ids = [f"d{i}" for i in range(500)]
    write_version(tmp_path, flat(vectors), ids, docs(ids), manifest(500))
    raw = faiss.IndexFlatIP(DIM)
    raw.add(vectors)
    scores, rows = raw.search(queries, 10)
    got = open_index(tmp_path, verify=True).search(queries, 10)
    assert [[i for i, _ in hits] for hits in got] == [[ids[r] for r in row] for row in rows]
    assert np.array_equal(np.array([[s for _, s in hits] for hits in got], dtype=np.float32), scores)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8", "HNSW32"])
def test_approximate_indexes_keep_recall(factory):
    vectors, queries = clustered(4000), clustered(50, seed=1)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    index = build_faiss(factory, DIM, [vectors[:2000], vectors[2000:]], vectors[:2000])
    _, rows = search_faiss(index, queries, 10, nprobe=8)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])
    assert recall > (0.5 if "PQ" in factory else 0.9)


def test_training_needs_a_sample_and_k_is_clipped():
    with pytest.raises(ValueError, match="must be trained"):
        build_faiss("IVF4,Flat", DIM, [clustered(100)], None)
    scores, rows = search_faiss(flat(clustered(5)), clustered(2, seed=3), 50)
    assert rows.shape == (2, 5)


def test_swap_keeps_an_open_reader_and_prunes_old_versions(tmp_path):
    first = [f"a{i}" for i in range(50)]
    write_version(tmp_path, flat(clustered(50)), first, docs(first), manifest(50))
    reader = open_index(tmp_path)
    query = clustered(1, seed=9)
    before = reader.search(query, 5)
    second = [f"b{i}" for i in range(60)]
    write_version(tmp_path, flat(clustered(60, seed=2)), second, docs(second), manifest(60))
    assert reader.search(query, 5) == before
    assert reader.documents(["a3"])[0]["title"] == "ta3"
    assert open_index(tmp_path).manifest.count == 60
    third = [f"c{i}" for i in range(70)]
    write_version(tmp_path, flat(clustered(70, seed=3)), third, docs(third), manifest(70))
    assert len(list((tmp_path / "versions").iterdir())) == 2
    assert not reader.path.exists()


def test_damaged_files_and_bad_inputs_are_refused(tmp_path):
    ids = [f"d{i}" for i in range(10)]
    version = write_version(tmp_path, flat(clustered(10)), ids, docs(ids), manifest(10))
    (version / "ids.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="damaged"):
        open_index(tmp_path, verify=True)
    with pytest.raises(ValueError, match="must agree"):
        write_version(tmp_path / "x", flat(clustered(10)), ids[:9], docs(ids), manifest(10))
    with pytest.raises(ValueError, match="not unique"):
        write_version(tmp_path / "y", flat(clustered(2)), ["a", "a"], docs(["a", "a"]), manifest(2))
    with pytest.raises(FileNotFoundError, match="no index at"):
        open_index(tmp_path / "missing")


def test_bm25_ranks_the_rare_word_first_and_round_trips(tmp_path):
    texts = ["the cat sat on the mat", "stock markets fell sharply", "a zeppelin floated over the park",
             "the dog sat on the log"]
    ids = ["c", "s", "z", "d"]
    model = build_bm25(texts)
    scores, rows = search_bm25(model, ["zeppelin ride", "the of and"], 3)
    assert rows[0][0] == 2 and scores[0][0] > 0
    assert (rows[1] == -1).all()
    write_version(tmp_path, flat(clustered(4)), ids, docs(ids), manifest(4), bm25=model)
    assert open_index(tmp_path).search_bm25(["zeppelin"], 2)[0][0][0] == "z"
