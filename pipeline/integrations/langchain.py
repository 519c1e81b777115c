"""LangChain: a retriever over an index folder or a running `htp serve`, returning `Document`s (the document's text,
with id, score, title and its metadata fields), and an `Embeddings` over the HTP encoder. Needs `langchain-core`
(`pip install 'htp-index[langchain]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, PrivateAttr

from htp import EncoderConfig, HTPEncoder
from pipeline.errors import PipelineValueError


class HTPRetriever(BaseRetriever):
    """Ranked documents from an index folder (`index_dir`) or a running service (`server`, its API key from
    `api_key` or HTP_API_KEY), in a search mode, optionally filtered by a `where` on metadata fields."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    index_dir: Path | None = None
    server: str | None = None
    api_key: str | None = None
    k: int = 4
    mode: str | None = None
    where: dict | None = None
    _searcher: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        if (self.index_dir is None) == (self.server is None):
            raise PipelineValueError("HTPRetriever needs exactly one of index_dir (a folder) or server (a URL)")

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        if self.server is not None:
            return self._from_server(query)
        from pipeline.query.searcher import Searcher

        if self._searcher is None:
            self._searcher = Searcher(Path(self.index_dir))  # type: ignore[arg-type]  # set: checked above
        hits = self._searcher.search(query, self.k, self.mode, self.where)
        texts = {doc["id"]: doc["text"] for doc in self._searcher.index.documents([hit.id for hit in hits])}
        return [_document(hit.id, hit.score, hit.title, texts[hit.id], hit.metadata) for hit in hits]

    def _from_server(self, query: str) -> list[Document]:
        from pipeline.service.client import ServiceClient

        with ServiceClient(str(self.server), self.api_key, timeout=120) as service:
            hits = service.search([query], self.k, self.mode, self.where, with_text=True)[0]
        return [_document(h["id"], h["score"], h["title"], h["text"], h.get("metadata", {})) for h in hits]


def _document(doc_id: str, score: float, title: str, text: str, metadata: dict) -> Document:
    return Document(page_content=text, id=doc_id, metadata={**metadata, "id": doc_id, "score": score, "title": title})


class HTPEmbeddings(Embeddings):
    """LangChain embeddings from the HTP encoder: documents without a prompt, queries with the query prompt."""

    def __init__(self, config: EncoderConfig | None = None, encoder: HTPEncoder | None = None) -> None:
        self.encoder = encoder or HTPEncoder(config or EncoderConfig())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode_document(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode_query(text).tolist()
