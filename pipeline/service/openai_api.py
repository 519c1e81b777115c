"""`POST /v1/embeddings` in the OpenAI embeddings format, so the official `openai` client (or anything speaking that
format) gets the index encoder's vectors from `htp serve`.

Policy: the service always embeds with its index's encoder, whatever `model` says (the answer names the real
model); `input_type` ("document" by default, "query" for the query prompt) is an extension the format lacks and
that retrieval needs; `dimensions` must be the encoder's own (HTP vectors cannot be cut short); token-array
inputs are refused; the limits on queries per request and characters apply as for `/search`."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Literal

import numpy as np
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, StrictInt, StrictStr

from pipeline.config import ServeConfig
from pipeline.query.searcher import Searcher


class EmbeddingsRequest(BaseModel):
    """The OpenAI embeddings request, with `input_type` added."""

    input: StrictStr | list[StrictStr]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    input_type: Literal["document", "query"] = "document"
    user: str | None = None


def _check(settings: ServeConfig, texts: list[str]) -> None:
    if not texts:
        raise HTTPException(400, "input is empty: give a text or a list of texts")
    if len(texts) > settings.max_batch_queries:
        raise HTTPException(400, f"{len(texts)} inputs in one request; at most {settings.max_batch_queries}")
    if sum(len(text) for text in texts) > settings.max_request_chars:
        raise HTTPException(400, f"more than {settings.max_request_chars} characters of input in one request")
    if any(not text.strip() for text in texts):
        raise HTTPException(400, "an input is empty: give some words to embed")


def embeddings_router(
    current: Callable[[], Awaitable[Searcher]], settings: ServeConfig, model_thread: Executor
) -> APIRouter:
    """The /v1/embeddings route over the live searcher's encoder (`current` gives it), run on the service's
    `model_thread` (see pipeline.service.app)."""
    router = APIRouter()

    @router.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> dict:
        """Vectors for each input, in the OpenAI format."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        _check(settings, texts)
        searcher = await current()
        encoder = await asyncio.get_running_loop().run_in_executor(model_thread, lambda: searcher.encoder)
        if body.dimensions is not None and body.dimensions != encoder.dimension:
            raise HTTPException(
                400, f"dimensions must be {encoder.dimension}, this encoder's; HTP vectors cannot be cut short"
            )
        vectors = await asyncio.get_running_loop().run_in_executor(
            model_thread, lambda: encoder.encode(texts, kind=body.input_type, show_progress=False)
        )
        tokens = sum(len(ids) for ids in encoder.tokenizer(texts)["input_ids"])
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
            for i, vector in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": searcher.index.manifest.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return router


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    """A vector as a list of floats, or as base64 of its little-endian float32 bytes (what the client decodes)."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
