"""indexes/: factory choice and checks, FAISS wrappers against raw FAISS, versioned folders, BM25."""

from __future__ import annotations

import hashlib
import json

import bm25s
import faiss
import numpy as np
import pyarrow as pa
import pytest

from conftest import WORDS
from indexes.deleted import marked
from indexes.errors import IndexValueError
from indexes.factory import choose_factory, resolve_factory
from indexes.faiss_index import build_faiss, search_faiss
from indexes.lexical import build_bm25, build_bm25_terms, changed_bm25, load_bm25, save_bm25, search_bm25
from indexes.live import can_change, change
from indexes.parts import PARTS, Shape
from indexes.store import Manifest, open_index, write_version
from indexes.upgrade import FORMAT, upgrade_manifest

DIM = 32


def clustered(n: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Normalised gaussian-mixture vectors, so approximate indexes face real neighbourhoods."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIM))
    vectors = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def manifest(count: int, window: list[int] | None = None) -> Manifest:
    return Manifest(
        dimension=DIM,
        metric="inner_product",
        count=count,
        factory="Flat",
        config_hash="h",
        encoder={"model": "m", "method": "htp", "window": window},
        package_versions={},
    )


def flat(vectors: np.ndarray) -> faiss.Index:
    return build_faiss("Flat", DIM, [vectors[: len(vectors) // 2], vectors[len(vectors) // 2 :]], None)


def docs(ids: list[str]) -> pa.Table:
    return pa.table({"id": ids, "title": [f"t{i}" for i in ids], "text": [f"text of {i}" for i in ids]})


def recall_at_10(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)]))


def test_auto_factory_follows_size_and_budget():
    assert choose_factory(5_000, 576, 2**30) == "Flat"
    assert choose_factory(19_999, 576, 2**30) == "Flat"
    assert choose_factory(20_000, 576, 2**30) == "HNSW32"
    assert choose_factory(200_000, 576, 2**30) == "HNSW32"
    assert choose_factory(200_000, 576, 2**27) == "IVF2048,PQ144"
    assert choose_factory(1_000_000, 576, 2**40).startswith("IVF4096,PQ")
    assert choose_factory(5_000_000, 576, 2**28) == "IVF8192,PQ48"  # the budget caps m: 5M * 48 bytes <= 256 MB
    assert choose_factory(10_000, 64, 2**16) == "IVF256,PQ4"  # nlist halved from 512 so 39 * nlist <= n
    with pytest.raises(ValueError, match="memory_budget_mb"):
        choose_factory(5_000_000, 576, 1000)


def test_resolve_factory_checks_strings():
    assert resolve_factory("auto", 5_000, DIM, 2**30) == "Flat"
    assert resolve_factory("HNSW16", 1000, DIM, 2**30) == "HNSW16"
    with pytest.raises(ValueError, match="'IVFx,Flat'"):
        resolve_factory("IVFx,Flat", 1000, DIM, 2**30)
    with pytest.raises(ValueError, match="'PQ5'"):
        resolve_factory("PQ5", 1000, DIM, 2**30)
    with pytest.raises(ValueError, match="too few vectors to train IVF4096"):
        resolve_factory("IVF4096,Flat", 1000, DIM, 2**30)


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


@pytest.mark.parametrize(
    ("factory", "floor"), [("IVF16,Flat", 0.95), ("IVF16,PQ16", 0.7), ("IVF16,PQ8", 0.45), ("HNSW32", 0.8)]
)
def test_approximate_indexes_keep_recall_with_default_parameters(factory, floor):
    vectors, queries = clustered(4000), clustered(50, seed=1)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    index = build_faiss(factory, DIM, [vectors[:2000], vectors[2000:]], vectors[:2000])
    scores, rows = search_faiss(index, queries, 10)
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and rows.shape == (50, 10)
    assert recall_at_10(rows, truth) > floor


def test_nprobe_and_ef_search_reach_faiss():
    vectors, queries = clustered(4000), clustered(50, seed=1)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    ivf = build_faiss("IVF16,Flat", DIM, [vectors], vectors)
    narrow = recall_at_10(search_faiss(ivf, queries, 10, nprobe=1)[1], truth)
    assert faiss.extract_index_ivf(ivf).nprobe == 1
    assert narrow < recall_at_10(search_faiss(ivf, queries, 10, nprobe=100)[1], truth) == 1.0
    assert faiss.extract_index_ivf(ivf).nprobe == 16  # capped at nlist
    hnsw = build_faiss("HNSW32", DIM, [vectors], None)
    assert hnsw.hnsw.efConstruction == 80
    shallow = recall_at_10(search_faiss(hnsw, queries, 10, ef_search=16)[1], truth)
    assert shallow < recall_at_10(search_faiss(hnsw, queries, 10, ef_search=256)[1], truth)
    search_faiss(hnsw, queries, 10)
    assert hnsw.hnsw.efSearch == 128  # the default
    search_faiss(hnsw, queries, 300)
    assert hnsw.hnsw.efSearch == 300  # never below k


def test_training_and_shapes_are_checked():
    with pytest.raises(ValueError, match="must be trained"):
        build_faiss("IVF4,Flat", DIM, [clustered(100)], None)
    with pytest.raises(ValueError, match="has 3 vectors but 'IVF4,Flat' has 4 lists"):
        build_faiss("IVF4,Flat", DIM, [clustered(100)], clustered(3))
    with pytest.raises(ValueError, match=r"batch 1 has shape \(5, 16\)"):
        build_faiss("Flat", DIM, [clustered(5), np.zeros((5, 16))], None)
    index = flat(clustered(5))
    scores, rows = search_faiss(index, clustered(2, seed=3), 50)
    assert rows.shape == scores.shape == (2, 5) and (rows >= 0).all()
    with pytest.raises(ValueError, match="k must be at least 1"):
        search_faiss(index, clustered(2), 0)


def test_write_and_open_round_trip(tmp_path):
    vectors = clustered(3000)
    ids = [f"doc-{i}" for i in range(3000)]
    center = vectors.mean(axis=0)
    version = write_version(tmp_path, flat(vectors), ids, docs(ids), manifest(3000, window=[1, 7]), center=center)
    opened = open_index(tmp_path, verify=True)
    assert opened.path == version and opened.ids == ids
    assert np.array_equal(opened.center, center) and opened.center.dtype == np.float32
    assert opened.manifest.encoder == {"model": "m", "method": "htp", "window": [1, 7]} and opened.manifest.model == "m"
    assert opened.manifest.centered and not opened.manifest.bm25 and opened.manifest.created
    assert set(opened.manifest.checksums) == {"index.faiss", "ids.parquet", "docs.parquet", "center.npy"}
    assert Manifest.from_json(opened.manifest.to_json()) == opened.manifest
    wanted = ["doc-2999", "doc-0", "doc-1500", "doc-0"]
    assert opened.documents(wanted) == [{"id": i, "title": f"t{i}", "text": f"text of {i}"} for i in wanted]
    with pytest.raises(ValueError, match="ids not in the index"):
        opened.documents(["nope"])
    with pytest.raises(ValueError, match="no BM25 part"):
        opened.search_bm25(["word"], 3)
    bare = write_version(tmp_path, flat(vectors), ids, docs(ids), manifest(3000))
    assert open_index(tmp_path).center is None and not (bare / "center.npy").exists()


def test_swap_keeps_an_open_reader_and_prunes_old_versions(tmp_path):
    first = [f"a{i}" for i in range(50)]
    write_version(tmp_path, flat(clustered(50)), first, docs(first), manifest(50))
    reader = open_index(tmp_path)
    query = clustered(1, seed=9)
    before = reader.search(query, 5)
    assert all(i.startswith("a") for i, _ in before[0])
    second = [f"b{i}" for i in range(60)]
    write_version(tmp_path, flat(clustered(60, seed=2)), second, docs(second), manifest(60))
    assert reader.search(query, 5) == before
    assert reader.documents(["a3"])[0]["title"] == "ta3"
    fresh = open_index(tmp_path)
    assert fresh.manifest.count == 60 and all(i.startswith("b") for i, _ in fresh.search(query, 5)[0])
    third = [f"c{i}" for i in range(70)]
    write_version(tmp_path, flat(clustered(70, seed=3)), third, docs(third), manifest(70))
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == sorted(
        [fresh.path.name, open_index(tmp_path).path.name]
    )
    assert not reader.path.exists()
    assert reader.search(query, 5) == before and reader.documents(["a4"])[0]["text"] == "text of a4"


def test_damaged_files_and_bad_inputs_are_refused(tmp_path):
    ids = [f"d{i}" for i in range(10)]
    version = write_version(tmp_path, flat(clustered(10)), ids, docs(ids), manifest(10))
    (version / "ids.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="ids.parquet is damaged"):
        open_index(tmp_path, verify=True)
    (version / "docs.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="docs.parquet is missing"):
        open_index(tmp_path, verify=True)
    (tmp_path / "CURRENT").write_text("20200101T000000-gone\n")
    with pytest.raises(FileNotFoundError, match="names version '20200101T000000-gone'"):
        open_index(tmp_path)
    with pytest.raises(ValueError, match="must agree"):
        write_version(tmp_path / "x", flat(clustered(10)), ids[:9], docs(ids), manifest(10))
    with pytest.raises(ValueError, match="not unique"):
        write_version(tmp_path / "y", flat(clustered(2)), ["a", "a"], docs(["a", "a"]), manifest(2))
    with pytest.raises(ValueError, match="not in the order of ids"):
        write_version(tmp_path / "z", flat(clustered(10)), ids, docs(ids[::-1]), manifest(10))
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    for missing in (tmp_path / "missing", tmp_path / "x"):
        with pytest.raises(FileNotFoundError, match="no index at .*: build one with `htp build`"):
            open_index(missing)


TEXTS = [" ".join(np.random.default_rng(i).choice(WORDS, size=3 + i % 9)) for i in range(300)]


def test_bm25_scored_here_is_bm25s_own_index_entry_for_entry():
    reference = bm25s.BM25()
    reference.index(bm25s.tokenize(TEXTS, lower=True, stopwords="en", show_progress=False), show_progress=False)
    ours = build_bm25(TEXTS)
    assert ours.vocab_dict == reference.vocab_dict
    assert np.array_equal(ours.scores["indices"], reference.scores["indices"])
    words = len(reference.scores["indptr"])  # bm25s gives its empty token no column; ours is an empty one
    assert (
        np.array_equal(ours.scores["indptr"][:words], reference.scores["indptr"])
        and len(set(ours.scores["indptr"][words - 1 :])) == 1
    )
    assert np.allclose(ours.scores["data"], reference.scores["data"], rtol=1e-6, atol=0)


def test_a_changed_bm25_scores_what_a_fresh_one_scores():
    model, terms = build_bm25_terms(TEXTS[:200])
    kept = np.ones(200, dtype=bool)
    kept[[0, 7, 50, 51, 199]] = False
    incoming = [*TEXTS[200:], "an entirely new zeppelin word"]
    changed, changed_terms = changed_bm25(model, terms, kept, incoming)
    fresh, fresh_terms = build_bm25_terms([t for t, k in zip(TEXTS[:200], kept) if k] + incoming)
    queries = ["cat mat", "zeppelin", "stock report park", "nothing known here"]
    assert [a.tolist() for a in search_bm25(changed, queries, 20)] == [
        b.tolist() for b in search_bm25(fresh, queries, 20)
    ]
    assert np.array_equal(changed_terms.lengths, fresh_terms.lengths) and changed.scores["num_docs"] == 296


def test_bm25_ranks_the_rare_word_first_and_round_trips(tmp_path):
    texts = [
        "the cat sat on the mat",
        "stock markets fell sharply",
        "a zeppelin floated over the park",
        "the dog sat on the log",
    ]
    ids = ["c", "s", "z", "d"]
    model = build_bm25(texts)
    scores, rows = search_bm25(model, ["zeppelin ride", "the of and", "sat"], 10)
    assert rows.shape == scores.shape == (3, 4) and rows.dtype == np.int64 and scores.dtype == np.float32
    assert rows[0][0] == 2 and scores[0][0] > 0 and (rows[0][1:] == -1).all()
    assert (rows[1] == -1).all()
    assert sorted(rows[2][:2]) == [0, 3]
    save_bm25(model, tmp_path / "bm25")
    loaded_scores, loaded_rows = search_bm25(load_bm25(tmp_path / "bm25"), ["zeppelin ride", "the of and", "sat"], 10)
    assert np.array_equal(loaded_rows, rows) and np.allclose(loaded_scores, scores)
    write_version(tmp_path / "index", flat(clustered(4)), ids, docs(ids), manifest(4), bm25=model)
    assert open_index(tmp_path / "index", verify=True).search_bm25(["Zeppelin"], 2) == [[("z", scores[0][0])]]

    with pytest.raises(FileNotFoundError, match="no BM25 index in"):
        load_bm25(tmp_path / "nothing")


class DocumentLengths:
    """A toy part, written only here: each document's text length, as a new part (a metadata column, a deletion
    bitmap) would be added. Nothing in indexes/ or pipeline/ changes for it."""

    name, path, mapped = "lengths", "lengths.npy", ()

    def save(self, value, folder):
        np.save(folder / self.path, value)

    def load(self, folder, shape):
        lengths = np.load(folder / self.path)
        if lengths.shape != (shape.documents,):
            raise ValueError(f"{folder / self.path} has {lengths.shape} lengths for {shape.documents} documents")
        return lengths


def test_a_new_part_is_one_class_and_one_registration(tmp_path, monkeypatch):
    monkeypatch.setitem(PARTS, "lengths", DocumentLengths())
    ids = [f"d{i}" for i in range(10)]
    lengths = np.array([len(f"text of {i}") for i in ids])
    version = write_version(tmp_path, flat(clustered(10)), ids, docs(ids), manifest(10), lengths=lengths)
    opened = open_index(tmp_path, verify=True)
    assert opened.manifest.parts == ["faiss", "lengths"] and "lengths.npy" in opened.manifest.checksums
    assert np.array_equal(opened.parts["lengths"], lengths)
    np.save(version / "lengths.npy", lengths[:3])  # a consistent rewrite: checksum and size now match again
    data = json.loads((version / "manifest.json").read_text())
    data["checksums"]["lengths.npy"] = hashlib.sha256((version / "lengths.npy").read_bytes()).hexdigest()
    data["sizes"]["lengths.npy"] = (version / "lengths.npy").stat().st_size
    (version / "manifest.json").write_text(json.dumps(data))
    (tmp_path / "CURRENT").write_text(f"{version.name}\n")
    with pytest.raises(ValueError, match="has \\(3,\\) lengths for 10 documents"):
        open_index(tmp_path)
    with pytest.raises(ValueError, match=r"unknown index part\(s\) \['colours'\]"):
        write_version(tmp_path, flat(clustered(10)), ids, docs(ids), manifest(10), colours=lengths)


def test_older_manifest_formats_are_read_through_one_upgrade():
    format_1 = {"bm25": True, "centered": True, "calibration": {"fusion": "score"}, "model": "m", "window": [1, 7]}
    assert upgrade_manifest(dict(format_1)) == {
        "calibration": {"fusion": "score"},
        "format": FORMAT,
        "parts": ["faiss", "center", "bm25", "calibration"],
    }
    assert upgrade_manifest({"format": FORMAT, "parts": ["faiss"]}) == {"format": FORMAT, "parts": ["faiss"]}
    with pytest.raises(ValueError, match=f"manifest format {FORMAT + 1} is not one this version of htp-index reads"):
        upgrade_manifest({"format": FORMAT + 1})


@pytest.mark.parametrize("factory", ["Flat", "IVF32,Flat", "IVF32,PQ8", "HNSW16", "OPQ8,IVF32,PQ8"])
@pytest.mark.parametrize("exact_rows", [0, 4096])  # HNSW walking its graph with the selector, or scoring the rows
def test_a_filtered_faiss_search_returns_k_allowed_rows(factory, exact_rows, monkeypatch):
    import indexes.faiss_index as faiss_index

    monkeypatch.setattr(faiss_index, "EXACT_ROWS", exact_rows)
    vectors, queries = clustered(3000), clustered(8, seed=5)
    index = build_faiss(factory, DIM, [vectors], vectors)
    for share in (0.005, 0.1, 0.6):
        allowed = np.random.default_rng(1).random(3000) < share
        scores, rows = search_faiss(index, queries, 10, nprobe=1, ef_search=16, allowed=allowed)
        assert (rows >= 0).sum(axis=1).tolist() == [min(10, int(allowed.sum()))] * 8, (factory, share)
        assert allowed[rows[rows >= 0]].all()
        if factory == "Flat" or (factory == "HNSW16" and exact_rows and share < 0.1):  # exact: the best, in order
            truth = np.flatnonzero(allowed)[np.argsort(-(vectors[allowed] @ queries.T), axis=0)[:10].T]
            assert np.array_equal(rows, truth)


@pytest.mark.parametrize(
    "factory, removes",
    [
        ("Flat", True),
        ("PQ4", True),
        ("IVF8,Flat", True),
        ("IVF8,PQ4", True),
        ("PCA8,IVF8,Flat", True),
        ("HNSW16", False),
    ],
)
def test_live_changes_keep_each_row_s_label_its_position(factory, removes):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_faiss(factory, 16, [vectors[:500]], vectors)
    removed = np.array([0, 3, 100, 499]) if removes else np.array([], dtype=np.int64)
    assert can_change(index, removes=bool(len(removed)))
    change(index, removed, vectors[500:])
    final = np.concatenate([np.delete(vectors[:500], removed, axis=0), vectors[500:]])
    assert index.ntotal == len(final)
    exhaustive = faiss.ParameterSpace()
    exhaustive.set_index_parameters(
        index, "nprobe=8" if "IVF" in factory else "efSearch=128" if "HNSW" in factory else ""
    )
    rows = search_faiss(index, final[[5, 200, len(final) - 3]], 1)[1][:, 0]
    if "PQ" not in factory and "PCA" not in factory:  # lossy codes may rank a neighbour first
        assert rows.tolist() == [5, 200, len(final) - 3]
    reconstructable = faiss.downcast_index(index)
    if isinstance(reconstructable, faiss.IndexFlat):
        assert np.allclose(index.reconstruct_n(0, index.ntotal), final)


def test_indexes_that_cannot_remove_say_so():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    assert not can_change(build_faiss("HNSW16", 16, [vectors], None), removes=True)
    assert not can_change(build_faiss("IVF4,Flat,RFlat", 16, [vectors], vectors), removes=True)


@pytest.mark.parametrize("exact_rows", [0, 32_768])  # HNSW walking its graph around the deleted rows, or scoring
def test_rows_marked_deleted_in_hnsw_are_never_returned_and_rows_keep_their_positions(
    tmp_path, exact_rows, monkeypatch
):
    import indexes.faiss_index as faiss_index

    monkeypatch.setattr(faiss_index, "EXACT_ROWS", exact_rows)
    vectors, queries = clustered(2000), clustered(8, seed=5)
    index = build_faiss("HNSW16", DIM, [vectors], None)
    rng = np.random.default_rng(3)
    deleted = marked(None, rng.choice(2000, 300, replace=False), 2000)
    deleted = marked(deleted, rng.choice(1700, 300, replace=False), 2000)  # a second change numbers the rows left
    assert len(deleted) == 600 and np.array_equal(deleted, np.unique(deleted))
    live = np.delete(np.arange(2000), deleted)
    ids = [f"d{label}" for label in live]  # ids name each row by its label, so a wrong mapping shows
    write_version(tmp_path, index, ids, docs(ids), manifest(2000), deleted=deleted)
    opened = open_index(tmp_path, verify=True)
    hits = opened.search(queries, 10, ef_search=128)
    truth = live[np.argsort(-(vectors[live] @ queries.T), axis=0)[:10].T]
    assert [len(h) for h in hits] == [10] * 8
    found = np.array([[int(i.removeprefix("d")) for i, _ in h] for h in hits])
    assert not np.isin(found, deleted).any()
    assert recall_at_10(found, truth) >= 0.9
    scores = np.array([[score for _, score in h] for h in hits])
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, vectors[found]), atol=1e-5)  # each label's own vector
    allowed = np.zeros(len(ids), dtype=bool)
    allowed[::100] = True  # 14 of the rows left: every one comes back, deleted rows never
    filtered = opened.search(queries[:1], 20, allowed=allowed)[0]
    assert sorted(i for i, _ in filtered) == sorted(ids[::100])
    with pytest.raises(IndexValueError, match="2000 vectors \\(599 marked deleted\\), with 1400 ids"):
        write_version(tmp_path, index, ids, docs(ids), manifest(2000), deleted=deleted[:-1])
    part = PARTS["deleted"]
    for wrong in (deleted[::-1], np.append(deleted, 2000), deleted.astype(np.int32)):
        np.save(tmp_path / part.path, wrong)
        with pytest.raises(IndexValueError, match="deleted.npy .* not a sorted list of distinct labels below 2000"):
            part.load(tmp_path, Shape(2000, DIM, 1400))
