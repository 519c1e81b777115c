"""The LangChain retriever (over a folder and over a running service) and embeddings, with the real langchain-core."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from langchain_core.documents import Document

from pipeline.ingest.builder import build
from pipeline.integrations.langchain import HTPEmbeddings, HTPRetriever
from pipeline.query.searcher import Searcher


@pytest.fixture
def indexed(config, tmp_path):
    rows = [
        {
            "_id": ["man/{}", "man/../{}", "./{}/.."][i % 3].format(i),  # "." and ".." segments, kept as given
            "title": f"Page {i}",
            "text": f"Protein market report number {i}. The cat sat.",
            "section": i % 3,
        }
        for i in range(12)
    ]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    chosen = replace(
        config, index=replace(config.index, calibrate=False), data=replace(config.data, metadata_fields=("section",))
    )
    build(chosen, tmp_path / "corpus.jsonl", tmp_path / "index")
    return chosen, tmp_path / "index"


def test_the_retriever_returns_documents_from_a_folder_and_from_a_service(indexed):
    from test_serve import serving

    config, folder = indexed
    retriever = HTPRetriever(index_dir=folder, k=3, mode="hybrid", where={"section": 1})
    documents = retriever.invoke("protein market report")
    expected = Searcher(folder, config).search("protein market report", 3, "hybrid", {"section": 1})
    assert all(isinstance(doc, Document) for doc in documents)
    assert [doc.id for doc in documents] == [hit.id for hit in expected] and len(documents) == 3
    assert all(doc.metadata["section"] == 1 and doc.page_content.startswith("Protein market") for doc in documents)
    assert [doc.metadata["score"] for doc in documents] == pytest.approx([hit.score for hit in expected])
    with serving(folder) as url:
        remote = HTPRetriever(server=url, k=3, mode="hybrid", where={"section": 1}).invoke("protein market report")
    assert [(doc.id, doc.page_content) for doc in remote] == [(doc.id, doc.page_content) for doc in documents]
    with pytest.raises(ValueError, match="exactly one of index_dir"):
        HTPRetriever(k=3)


def test_the_embeddings_are_the_encoder_s(make_encoder):
    encoder = make_encoder()
    embeddings = HTPEmbeddings(encoder=encoder)
    texts = ["The cat sat on the mat.", "Stock markets fell."]
    assert np.allclose(embeddings.embed_documents(texts), encoder.encode(texts, kind="document"), atol=1e-6)
    assert np.allclose(embeddings.embed_query(texts[0]), encoder.encode(texts[0], kind="query"), atol=1e-6)


def test_no_documents_embed_to_no_vectors(make_encoder):
    from pipeline.integrations.langchain import HTPEmbeddings

    assert HTPEmbeddings(encoder=make_encoder()).embed_documents([]) == []


def test_a_retriever_whose_server_is_down_raises_the_package_s_error():
    """It raised a raw httpx error; now the service client's ServiceError (a PipelineError) names the URL."""
    import socket

    from pipeline.errors import PipelineError
    from pipeline.integrations.langchain import HTPRetriever

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PipelineError, match=f"cannot reach the service at http://127.0.0.1:{port}"):
        HTPRetriever(server=f"http://127.0.0.1:{port}").invoke("anything")
