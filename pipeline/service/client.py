"""The one client of a running `htp serve`: `htp query/add/delete --server`, the LangChain retriever and the
benchmarks all speak the service's wire protocol through it (light: httpx only, no model, no index)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

import httpx

from pipeline.errors import PipelineError


class ServiceError(PipelineError):
    """The service could not be reached, or answered with an error (its status and detail in the message)."""


def search_target(query: str, k: int | None = None, mode: str | None = None, where: str | None = None) -> str:
    """The path and query string of `GET /search` for one query (also what a raw-socket load generator sends)."""
    params = {"q": query, "k": k, "mode": mode, "where": where}
    return "/search?" + urlencode({key: value for key, value in params.items() if value is not None})


class ServiceClient:
    """Requests to the service at `url`, its API key from `api_key` or HTP_API_KEY; every answer is the service's
    JSON, every failure a ServiceError."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        key = api_key or os.environ.get("HTP_API_KEY")
        self._client = httpx.Client(headers={"X-API-Key": key} if key else {}, timeout=timeout)

    def request(self, method: str, path: str, params: dict | None = None, body: object = None) -> Any:
        """One request; its JSON answer, or a ServiceError saying what the service answered."""
        try:
            response = self._client.request(method, self.url + path, params=params, json=body)
        except httpx.HTTPError as err:
            raise ServiceError(f"cannot reach the service at {self.url}: {err}") from err
        if response.status_code != 200:
            is_json = response.headers.get("content-type", "").startswith("application/json")
            detail = response.json().get("detail") if is_json else response.text[:200]
            raise ServiceError(f"the service at {self.url} answered {response.status_code}: {detail}")
        return response.json()

    def search(
        self,
        queries: list[str],
        k: int | None = None,
        mode: str | None = None,
        where: dict | None = None,
        with_text: bool = False,
    ) -> list[list[dict]]:
        """Hits for each query (POST /search), with each document's whole text when `with_text`."""
        body = {"queries": queries, "k": k, "mode": mode, "where": where, "with_text": with_text}
        return [result["hits"] for result in self.request("POST", "/search", body=body)["results"]]

    def search_one(self, query: str, k: int | None = None, mode: str | None = None, where: str | None = None) -> dict:
        """GET /search for one query, `where` as JSON text: the service's whole answer (version, mode, k, hits)."""
        return self.request("GET", search_target(query, k, mode, where))

    def add(self, documents: list[dict]) -> dict:
        """POST /documents: add or replace records, as one new version."""
        return self.request("POST", "/documents", body={"documents": documents})

    def delete(self, ids: list[str]) -> dict:
        """DELETE /documents?id=...: delete documents, as one new version."""
        return self.request("DELETE", "/documents", params={"id": ids})

    def health(self) -> dict:
        """GET /health: the version served and whether the encoder is loaded."""
        return self.request("GET", "/health")

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
