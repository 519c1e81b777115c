"""`htp serve` through FastAPI's test client on a tiny index: every endpoint, every bad input, the API key,
micro-batching, and a hot swap under concurrent requests; then a real service on loopback, and its search page
in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import write_corpus
from indexes.store import open_index
from pipeline.config import Config
from pipeline.ingest.builder import build
from pipeline.query.request import SearchRequest
from pipeline.query.searcher import Searcher
from pipeline.service import app as serve
from pipeline.service.app import create_app
from pipeline.service.guard import Guard


@pytest.fixture
def served(config: Config, tmp_path) -> tuple[Config, Path]:
    quick = replace(config, index=replace(config.index, calibrate=False))
    build(quick, write_corpus(tmp_path / "corpus.jsonl", 20), tmp_path / "index")
    return quick, tmp_path / "index"


def test_the_service_loads_its_encoder_at_start_unless_told_not_to(served):
    config, index_dir = served
    warm = TestClient(create_app(index_dir, config))
    deadline = time.monotonic() + 60
    while not warm.get("/health").json()["encoder_loaded"]:  # no request asked for the model
        assert time.monotonic() < deadline, "the encoder was not loaded in the background"
        time.sleep(0.05)
    lazy = TestClient(create_app(index_dir, replace(config, serve=replace(config.serve, warm_up=False))))
    assert lazy.get("/search", params={"q": "cat", "mode": "bm25"}).status_code == 200
    assert lazy.get("/health").json()["encoder_loaded"] is False
    assert lazy.get("/search", params={"q": "cat", "mode": "dense"}).status_code == 200
    assert lazy.get("/health").json()["encoder_loaded"] is True


def test_every_endpoint_answers(served):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config))
    assert client.get("/health").json()["status"] == "ok"
    for mode in ("dense", "bm25", "hybrid"):
        body = client.get("/search", params={"q": "protein market", "k": 5, "mode": mode}).json()
        assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5] and body["mode"] == mode
        assert {"id", "score", "title", "snippet"} <= set(body["hits"][0]) and body["took_ms"] >= 0
    batch = client.post("/search", json={"queries": ["protein market", "library catalogue"], "k": 3}).json()
    assert [len(r["hits"]) for r in batch["results"]] == [3, 3]
    single = client.get("/search", params={"q": "library catalogue", "k": 3}).json()
    assert [h["id"] for h in single["hits"]] == [h["id"] for h in batch["results"][1]["hits"]]
    doc = client.get("/documents/d3").json()
    assert doc["id"] == "d3" and doc["title"] == "Doc 3"
    assert client.get("/documents/nope").status_code == 404
    assert client.get("/info").json()["count"] == 20
    assert client.post("/reload", json={}).json()["version"] == single["version"]
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize(
    "params, status, message",
    [
        ({"q": ""}, 400, "empty"),
        ({"q": "x" * 2001}, 400, "at most 2000"),
        ({"q": "cat", "k": 0}, 400, "k must be between 1 and 100"),
        ({"q": "cat", "k": 101}, 400, "k must be between 1 and 100"),
        ({"q": "cat", "k": "ten"}, 422, ""),
        ({"q": "cat", "mode": "fuzzy"}, 400, "mode 'fuzzy'"),
        ({}, 422, ""),
    ],
)
def test_bad_queries_get_a_clear_4xx(served, params, status, message):
    config, index_dir = served
    response = TestClient(create_app(index_dir, config)).get("/search", params=params)
    assert response.status_code == status and message in str(response.json()["detail"])


def test_bad_batches_get_a_clear_4xx(served):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config))
    assert client.post("/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/search", json={"queries": []}).status_code == 422
    too_many = client.post("/search", json={"queries": ["cat"] * 65})
    assert too_many.status_code == 400 and "at most 64" in too_many.json()["detail"]
    too_long = client.post("/search", json={"queries": ["protein market " * 133] * 64})  # each under 2,000 chars
    assert too_long.status_code == 400 and "at most 8000" in too_long.json()["detail"]
    huge = client.post("/search", content=b"x" * 1_000_001, headers={"content-type": "application/json"})
    assert huge.status_code == 413
    for k in (True, "3", 2.0):  # only a real integer is a k
        assert client.post("/search", json={"queries": ["cat"], "k": k}).status_code == 422


def test_cross_site_posts_are_refused_and_every_response_carries_security_headers(served):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        refused = client.post("/reload", content=b"{}", headers={"content-type": content_type})
        assert refused.status_code == 415 and "application/json" in refused.json()["detail"]
    for response in (client.get("/health"), client.get("/"), client.get("/search", params={"q": ""})):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert (
            response.headers["x-frame-options"] == "DENY"
            and "frame-ancestors 'none'" in response.headers["content-security-policy"]
        )
    assert client.get("/docs").status_code == 404  # its scripts would come from a third-party CDN


def test_documents_whose_id_holds_a_slash_can_be_fetched(config, tmp_path):
    corpus = tmp_path / "slashes.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": doc_id, "title": f"Page {i}", "text": f"Text {i} here."}) + "\n"
            for i, doc_id in enumerate(["man/3/page0", "..", "man/3/page2", "man/../3", "./page/."])
        )
    )
    quick = replace(config, index=replace(config.index, calibrate=False))
    build(quick, corpus, tmp_path / "index")
    client = TestClient(create_app(tmp_path / "index", quick))
    assert client.get("/documents/man/3/page2").json()["title"] == "Page 2"
    assert client.get("/documents/man/3/page9").status_code == 404
    for doc_id in ("..", "man/../3", "./page/."):  # a path would lose these segments; the query string keeps them
        assert client.get("/documents", params={"id": doc_id}).json()["id"] == doc_id
    assert client.get("/documents", params={"id": "man/3"}).status_code == 404


def test_info_lists_the_modes_the_index_can_answer(config, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 6)
    dense_only = replace(config, index=replace(config.index, calibrate=False, bm25=False))
    build(dense_only, corpus, tmp_path / "index")
    client = TestClient(create_app(tmp_path / "index", dense_only))
    assert [mode["name"] for mode in client.get("/info").json()["modes"]] == ["dense"]
    refused = client.get("/search", params={"q": "cat", "mode": "bm25"})
    assert refused.status_code == 400 and "no BM25 part" in refused.json()["detail"]


def test_the_api_key_guards_every_endpoint(served):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config, api_key="s3cret"))
    for path in ("/health", "/search?q=cat", "/info", "/documents/d1", "/openapi.json"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/health", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/health?api_key=s3cret").status_code == 401  # keys do not travel in URLs
    assert client.get("/").status_code == 200 and "X-API-Key" in client.get("/").text  # the page holds no data
    assert client.post("/", json={}).status_code == 401


def test_slow_bodies_get_a_408_and_hold_no_request_slot():
    answered: list[str] = []

    async def app(scope, receive, send):
        await receive()
        answered.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def request(path: str, slow: bool) -> int:
        statuses: list[int] = []

        async def receive():
            if slow:
                await asyncio.sleep(3600)
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await guard(scope, receive, send)
        return statuses[0]

    async def scenario() -> list[int]:
        slow = [asyncio.create_task(request("/slow", slow=True)) for _ in range(3)]
        await asyncio.sleep(0.05)
        fast = await request("/search", slow=False)  # one slot, and three slow senders are waiting
        return [fast, *await asyncio.gather(*slow)]

    guard = Guard(app, None, max_body_bytes=1000, max_in_flight=1, max_body_seconds=0.3)
    began = time.monotonic()
    assert asyncio.run(scenario()) == [200, 408, 408, 408]
    assert answered == ["/search"] and time.monotonic() - began < 2


def test_bodies_arriving_together_are_bounded_in_bytes_and_released_when_answered():
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def request(chunks: list[bytes], gate: asyncio.Event | None = None) -> int:
        statuses: list[int] = []
        pending = list(chunks)

        async def receive():
            chunk = pending.pop(0)
            if not pending and gate is not None:
                await gate.wait()  # the last chunk waits: the earlier ones are held meanwhile
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": "/search", "query_string": b"", "headers": []}
        scope["headers"] = [(b"content-type", b"application/json")]
        await guard(scope, receive, send)
        return statuses[0]

    async def scenario() -> list[int]:
        gate = asyncio.Event()
        slow = asyncio.create_task(request([b"x" * 600, b"y" * 10], gate))
        await asyncio.sleep(0.05)
        crowded = await request([b"z" * 600])  # 600 + 600 held would pass the 1,000-byte cap
        gate.set()
        return [crowded, await slow, await request([b"z" * 600])]

    guard = Guard(app, None, max_body_bytes=800, max_in_flight=4, max_buffered_bytes=1000)
    assert asyncio.run(scenario()) == [503, 200, 200]
    assert guard.buffered == 0


def passes_counted(monkeypatch, hold_first_s: float = 0.0) -> list[int]:
    """The size of every forward pass the service runs from now on; the first is held `hold_first_s` longer."""
    batches: list[int] = []
    rank = serve._rank

    def counting(jobs, *rest):
        batches.append(len(jobs))
        if len(batches) == 1:
            time.sleep(hold_first_s)
        return rank(jobs, *rest)

    monkeypatch.setattr(serve, "_rank", counting)
    return batches


def test_concurrent_queries_share_forward_passes(served, monkeypatch):
    config, index_dir = served
    slow = replace(config, serve=replace(config.serve, batch_wait_ms=300.0))
    batches = passes_counted(monkeypatch)
    with TestClient(create_app(index_dir, slow)) as client:
        client.post("/search", json={"queries": ["warm", "up"], "mode": "dense"})  # a pass of two: more may follow
        batches.clear()
        results = []
        threads = [
            threading.Thread(
                target=lambda q=q: results.append(
                    client.get("/search", params={"q": q, "mode": "dense", "k": 3}).json()
                )
            )
            for q in ("cat", "mat", "park", "sunny")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 4 and all(len(r["hits"]) == 3 for r in results)
    assert sum(batches) == 4 and len(batches) < 4  # fewer forward passes than requests


def test_queries_queued_during_a_pass_join_the_next_one_with_no_wait(served, monkeypatch):
    config, index_dir = served
    eager = replace(config, serve=replace(config.serve, batch_wait_ms=0.0))
    batches = passes_counted(monkeypatch, hold_first_s=0.5)  # the first pass still runs when the others arrive
    with TestClient(create_app(index_dir, eager)) as client:
        client.get("/search", params={"q": "warm up", "mode": "dense"})
        batches.clear()
        results: list[dict] = []

        def ask(q: str) -> None:
            results.append(client.get("/search", params={"q": q, "mode": "dense", "k": 3}).json())

        first = threading.Thread(target=ask, args=("cat",))
        first.start()
        time.sleep(0.2)
        rest = [threading.Thread(target=ask, args=(q,)) for q in ("mat", "park", "sunny")]
        for thread in rest:
            thread.start()
        for thread in [first, *rest]:
            thread.join()
    assert len(results) == 4 and all(len(r["hits"]) == 3 for r in results)
    assert batches == [1, 3]  # the lone query started at once; the three queued behind it shared one pass


def test_the_first_query_waits_for_others_only_when_more_are_likely(monkeypatch):
    """A lone client's query starts at once however long batch_wait_ms is; with another request in flight, or
    after a pass of several queries, the first query waits and one arriving 0.1 s later joins its pass."""
    batches: list[int] = []
    monkeypatch.setattr(serve, "_rank", lambda jobs, _observer: (batches.append(len(jobs)), [[] for _ in jobs])[1])

    async def two_queries(batcher: serve.MicroBatcher) -> float:
        began = time.perf_counter()
        request = SearchRequest(("cat", "mat"), 3, "dense")
        first = asyncio.ensure_future(batcher.submit(None, request, "cat", None))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        await asyncio.gather(first, batcher.submit(None, request, "mat", None))  # type: ignore[arg-type]
        return time.perf_counter() - began

    alone = serve.MicroBatcher(2000.0, 32, serve.Observer(False), ThreadPoolExecutor(1))
    assert asyncio.run(two_queries(alone)) < 1.0 and batches == [1, 1]  # neither waited the 2 s
    batches.clear()
    busy = serve.MicroBatcher(2000.0, 32, serve.Observer(False), ThreadPoolExecutor(1), others=lambda: 1)
    asyncio.run(two_queries(busy))
    assert batches == [2]
    batches.clear()
    after_a_pair = serve.MicroBatcher(1000.0, 32, serve.Observer(False), ThreadPoolExecutor(1))
    after_a_pair.last_pass = 2
    asyncio.run(two_queries(after_a_pair))
    assert batches == [2]


def test_every_forward_pass_of_the_service_runs_on_its_one_model_thread(served, monkeypatch):
    """Warm-up, searches (several at once too) and /v1/embeddings all run the model on one thread, so torch keeps
    one OpenMP team (a second makes libgomp sleep between regions and slows every pass)."""
    from htp.encoder import HTPEncoder

    threads: list[threading.Thread] = []
    forward = HTPEncoder.forward

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(HTPEncoder, "forward", recording)
    config, index_dir = served
    with TestClient(create_app(index_dir, config)) as client:
        asking = [
            threading.Thread(target=client.get, args=("/search",), kwargs={"params": {"q": q, "mode": mode}})
            for q in ("cat", "mat park")
            for mode in ("dense", "hybrid")
        ]
        for thread in asking:
            thread.start()
        for thread in asking:
            thread.join()
        assert client.post("/v1/embeddings", json={"input": ["a cat"]}).status_code == 200
    assert len(threads) >= 3 and len(set(threads)) == 1 and threads[0].name.startswith("htp-model")
    deadline = time.monotonic() + 10  # the service stopped: its model thread ends too
    while threads[0].is_alive():
        assert time.monotonic() < deadline, "the model thread outlived its service"
        time.sleep(0.05)


def test_hot_swap_under_concurrent_requests_serves_each_from_one_version(served, tmp_path):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config))
    client.__enter__()
    first = client.get("/health").json()["version"]
    seen: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def ask():
        body = client.get("/search", params={"q": "protein market report", "k": 30, "mode": "bm25"}).json()
        seen.append((body["version"], [h["id"] for h in body["hits"]]))

    def keep_asking():
        while not stop.is_set():
            ask()

    threads = [threading.Thread(target=keep_asking) for _ in range(3)]
    for thread in threads:
        thread.start()
    build(config, write_corpus(tmp_path / "more.jsonl", 26, seed=3), index_dir)  # d20..d25 exist only in the new one
    deadline = time.monotonic() + 60
    while seen[-1][0] == first:  # the new version opens in the background while the old one answers
        assert time.monotonic() < deadline, "the service never switched to the new version"
        ask()
    for _ in range(10):
        ask()
    stop.set()
    for thread in threads:
        thread.join()
    client.__exit__(None, None, None)
    second = seen[-1][0]
    assert second != first and {version for version, _ in seen} == {first, second}
    for version, ids in seen:
        limit = 20 if version == first else 26
        assert ids and all(int(i[1:]) < limit for i in ids)
    assert any(int(i[1:]) >= 20 for version, ids in seen if version == second for i in ids)


def test_a_version_that_fails_to_open_leaves_the_old_one_answering_and_is_not_retried(served, tmp_path, monkeypatch):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config))
    first = client.get("/health").json()["version"]
    build(config, write_corpus(tmp_path / "more.jsonl", 26, seed=3), index_dir)
    second = (index_dir / "CURRENT").read_text().split()[0]
    (index_dir / "versions" / second / "ids.parquet").write_bytes(b"damaged")
    opened: list[str] = []
    real = Searcher.reopened
    monkeypatch.setattr(Searcher, "reopened", lambda self: opened.append("try") or real(self))
    for _ in range(5):
        body = client.get("/search", params={"q": "protein market", "k": 3, "mode": "bm25"})
        assert body.status_code == 200 and body.json()["version"] == first
        time.sleep(0.05)
    assert opened == ["try"]  # one attempt in the background, not one per request
    refused = client.post("/reload", json={})
    assert refused.status_code == 400 and "ids.parquet" in refused.json()["detail"]
    assert client.get("/health").json()["version"] == first


@contextmanager
def serving(index_dir: Path, *options: str, headers: dict | None = None) -> Iterator[str]:
    """A real `htp serve` subprocess on a free 127.0.0.1 port, up and answering /health; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", str(index_dir), "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "htp serve did not come up"
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_request_after_a_change_by_another_process_answers_from_the_new_version(served):
    """After `htp delete` on a served folder has exited, the service's next request (the very next, with no pause
    and no reload) answers from the version the command wrote."""
    config, index_dir = served
    with serving(index_dir) as url:
        before = httpx.get(f"{url}/search", params={"q": "protein market", "mode": "bm25", "k": 20}, timeout=30)
        doomed = before.json()["hits"][0]["id"]
        subprocess.run([sys.executable, "-m", "pipeline.cli", "delete", str(index_dir), doomed], check=True)
        written = (index_dir / "CURRENT").read_text().split()[0]
        after = httpx.get(f"{url}/search", params={"q": "protein market", "mode": "bm25", "k": 20}, timeout=30)
        assert after.json()["version"] == written != before.json()["version"]
        assert doomed not in {hit["id"] for hit in after.json()["hits"]}
        assert httpx.get(f"{url}/documents", params={"id": doomed}, timeout=30).status_code == 404


def test_htp_serve_says_where_it_listens_once_its_socket_is_bound(served):
    config, index_dir = served
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", str(index_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        assert ready, "htp serve printed nothing"
        line = server.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(f"htp serve: listening on http://127.0.0.1:{port} ")
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200  # bound when it said so
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_htp_serve_answers_over_real_http_on_loopback(served):
    config, index_dir = served
    with serving(index_dir, "--api-key", "k1", headers={"X-API-Key": "k1"}) as url:
        body = httpx.get(
            f"{url}/search",
            params={"q": "protein market", "mode": "bm25", "k": 4},
            headers={"X-API-Key": "k1"},
            timeout=30,
        ).json()
        assert len(body["hits"]) == 4
        assert httpx.get(f"{url}/search", params={"q": "cat"}, timeout=10).status_code == 401
        remote = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "query",
                "-",
                "protein market",
                "--server",
                url,
                "--mode",
                "bm25",
                "-k",
                "4",
                "--json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "HTP_API_KEY": "k1"},
            timeout=120,
        )
        assert remote.returncode == 0, remote.stderr
        assert [h["id"] for h in json.loads(remote.stdout)] == [h["id"] for h in body["hits"]]


def htp(*args: str, key: str) -> subprocess.CompletedProcess:
    """The `htp` command in a new process, the API key in HTP_API_KEY."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HTP_API_KEY": key},
        timeout=120,
    )


def test_htp_add_and_delete_change_a_running_service(served, tmp_path):
    config, index_dir = served
    records = tmp_path / "new.jsonl"
    records.write_text(
        json.dumps({"_id": "n1", "title": "New", "text": "Zebra quasar harmonica."})
        + "\n"
        + json.dumps({"_id": "d2", "title": "Doc 2 again", "text": "Replaced text."})
        + "\n"
    )
    with serving(index_dir, "--api-key", "k1", headers={"X-API-Key": "k1"}) as url:
        added = htp("add", "-", str(records), "--server", url, key="k1")
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith("1 added, 1 replaced, 0 deleted (2 encoded); 21 documents at ")
        hits = httpx.get(
            f"{url}/search", params={"q": "zebra quasar", "mode": "bm25", "k": 1}, headers={"X-API-Key": "k1"}
        ).json()["hits"]
        assert hits[0]["id"] == "n1"  # the service answers from the new version at once
        gone = htp("delete", "-", "d3", "d4", "--server", url, key="k1")
        assert gone.returncode == 0 and "2 deleted" in gone.stdout and "19 documents" in gone.stdout
        unknown = htp("delete", "-", "d5", "nope", "--server", url, key="k1")
        assert unknown.returncode == 2 and "answered 404" in unknown.stderr and "'nope'" in unknown.stderr
        refused = htp("add", "-", str(records), "--server", url, key="wrong")
        assert refused.returncode == 2 and "answered 401" in refused.stderr
        (tmp_path / "new.csv").write_text("_id,text\nn2,x\n")
        not_json = htp("add", "-", str(tmp_path / "new.csv"), "--server", url, key="k1")
        assert not_json.returncode == 2 and "give a .jsonl or .json file" in not_json.stderr
    index = open_index(index_dir)
    assert len(index.doc_ids) == 19 and "n1" in index.doc_ids and "d3" not in index.doc_ids


def chunked_flood_reply(port: int, megabytes: int) -> bytes:
    """POST a body of `megabytes` MB in 1 MB chunks with no Content-Length, stopping when the server answers; the
    first bytes of its answer."""
    chunk = b"%x\r\n" % 1_000_000 + b" " * 1_000_000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(megabytes):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server stopped reading (or closed) after its answer
                break
        return sock.recv(4096)


def test_a_client_sending_a_body_too_large_reads_the_413_instead_of_a_reset(served):
    """The service answered a POST past serve.max_body_bytes and closed while the client still wrote: the kernel
    reset the connection and the client got a reset or a broken pipe, never the 413 (8 MB here: loopback buffers
    hide smaller ones). Now a refused body up to 16 times the limit is read to its end first."""
    _, index_dir = served
    with serving(index_dir) as url:
        port = int(url.rsplit(":", 1)[1])
        body = b'{"queries": ["' + b"x" * 8_000_000 + b'"]}'
        for framing in (b"Content-Length: %d\r\n" % len(body), b""):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
                if framing:
                    sock.sendall(framing + b"\r\n" + body)  # declared too large: refused before it is read
                else:  # chunked: refused once it passes the limit
                    sock.sendall(b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_a_url_or_headers_too_long_get_414_and_431_not_a_reset(served):
    """A 300 KB `where` in the URL got a connection reset with no status."""
    _, index_dir = served
    with serving(index_dir) as url:
        port = int(url.rsplit(":", 1)[1])
        where = urlencode({"where": json.dumps({"kind": {"$in": ["memo"] * 40_000}})})  # about 300 KB
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # httpx refuses such a URL itself
            sock.sendall(f"GET /search?q=cat&{where} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 414") and b"send a long filter in a POST /search body" in answer
        crowded = httpx.get(f"{url}/health", headers={f"X-Pad-{i}": "y" * 1000 for i in range(100)}, timeout=30)
        assert crowded.status_code == 431 and "request headers have" in crowded.json()["detail"]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_the_service_cannot_be_locked_out_by_idle_sockets_or_a_chunked_flood(served):
    _, index_dir = served
    with serving(index_dir) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
        try:
            began = time.monotonic()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            assert httpx.get(f"{url}/search", params={"q": "cat", "mode": "bm25"}, timeout=5).status_code == 200
            assert time.monotonic() - began < 2

            began = time.monotonic()
            assert chunked_flood_reply(port, megabytes=50).startswith(b"HTTP/1.1 413")
            assert time.monotonic() - began < 10
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_without_a_key_on_loopback_only_loopback_names_are_served(served):
    _, index_dir = served
    with serving(index_dir) as url:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        port = url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", "127.0.0.1"):
            assert httpx.get(f"{url}/health", headers={"host": host}, timeout=5).status_code == 200
        rebound = httpx.get(f"{url}/info", headers={"host": f"attacker.example:{port}"}, timeout=5)
        assert rebound.status_code == 400 and "Host" in rebound.json()["detail"]


def test_the_search_page_in_a_real_browser_shows_ranked_results(served, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: `make test` installs it (apt-get install chromium)"
    config, index_dir = served
    key = {"X-API-Key": "s3cret"}
    with serving(index_dir, "--api-key", "s3cret", headers=key) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        asked: list[tuple[str, str | None]] = []
        page.on("request", lambda request: asked.append((request.url, request.headers.get("x-api-key"))))
        page.goto(url + "/#key=s3cret")  # a fragment never reaches the server
        page.wait_for_selector("#mode option", state="attached")
        info = httpx.get(f"{url}/info", headers=key, timeout=30).json()
        assert page.locator("#mode option").all_inner_texts() == [mode["name"] for mode in info["modes"]]
        assert page.locator("#mode").input_value() == info["default_mode"]
        page.fill("#q", "protein market")
        page.select_option("#mode", "dense")
        page.click("button[type=submit]")
        page.wait_for_selector("#results li")
        titles = page.locator("#results li .title").all_inner_texts()
        api = httpx.get(
            f"{url}/search", params={"q": "protein market", "mode": "dense"}, headers=key, timeout=30
        ).json()
        assert titles == [hit["title"] for hit in api["hits"]] and len(titles) == 10
        assert re.fullmatch(r"10 hits, dense, [0-9.]+ ms", page.locator("#status").inner_text())
        page.screenshot(path=str(tmp_path / "search_page.png"))
        page.locator("#results li .title").first.click()
        page.wait_for_selector("#results li .document")
        document = httpx.get(f"{url}/documents/{api['hits'][0]['id']}", headers=key, timeout=30).json()
        assert page.locator("#results li .document").first.inner_text() == document["text"].strip()
        assert not any("s3cret" in address for address, _ in asked)
        assert all(sent == "s3cret" for address, sent in asked if "/search" in address or "/documents/" in address)
        browser.close()


def test_the_openai_client_gets_the_encoder_s_vectors_from_v1_embeddings(served):
    from openai import OpenAI

    config, index_dir = served
    texts = ["protein market report", "the cat sat on the mat"]
    encoder = Searcher(index_dir, config).encoder
    with serving(index_dir) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused on loopback without a key")
        answer = client.embeddings.create(input=texts, model="anything")  # the client asks for base64
        got = np.array([item.embedding for item in answer.data], dtype=np.float32)
        assert np.allclose(got, encoder.encode(texts, kind="document"), atol=1e-4)
        assert answer.model == open_index(index_dir).manifest.model and answer.usage.prompt_tokens > 0
        query = client.embeddings.create(
            input=texts[0], model="htp", encoding_format="float", extra_body={"input_type": "query"}
        )
        assert np.allclose(query.data[0].embedding, encoder.encode(texts[0], kind="query"), atol=1e-4)
        wrong = httpx.post(f"{url}/v1/embeddings", json={"input": "x", "dimensions": 3}, timeout=30)
        assert wrong.status_code == 400 and "dimensions must be" in wrong.json()["detail"]
        tokens = httpx.post(f"{url}/v1/embeddings", json={"input": [[1, 2, 3]]}, timeout=30)
        assert tokens.status_code == 422  # token arrays are refused


def test_metrics_count_requests_batches_and_forward_passes(served, caplog):
    from prometheus_client.parser import text_string_to_metric_families

    config, index_dir = served
    logged = replace(config, serve=replace(config.serve, access_log=True))
    caplog.set_level(logging.INFO, logger="htp.access")
    with TestClient(create_app(index_dir, logged)) as client:
        for mode in ("dense", "bm25", "dense"):
            assert client.get("/search", params={"q": "secret words", "mode": mode}).status_code == 200
        assert client.get("/search", params={"q": "x", "mode": "nope"}).status_code == 400
        assert client.get("/documents/no/such/doc").status_code == 404
        text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("htp_requests_total", (("endpoint", "/search"), ("status", "200")))] == 3
    assert samples[("htp_requests_total", (("endpoint", "/search"), ("status", "400")))] == 1
    assert samples[("htp_requests_total", (("endpoint", "/documents"), ("status", "404")))] == 1
    assert samples[("htp_request_seconds_count", (("endpoint", "/search"),))] == 4
    assert samples[("htp_batch_queries_count", ())] == 3 and samples[("htp_forward_seconds_count", ())] == 2
    assert samples[("htp_index_documents", ())] == 20
    version = open_index(index_dir).path.name
    assert samples[("htp_index_version", (("version", version),))] == 1
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "htp.access"]
    assert [line["status"] for line in lines[:5]] == [200, 200, 200, 400, 404]
    assert lines[0]["path"] == "/search" and not any("secret" in json.dumps(line) for line in lines)


def test_the_service_imports_no_write_side_until_a_write_arrives():
    """Serving loads the read side only: build, changes, engines, load and shards come with the first write."""
    probe = (
        "import sys, pipeline.service.app, pipeline.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('pipeline.ingest')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert out.stdout.strip() == "[]"


def test_a_search_with_texts_carries_each_hits_whole_document(served):
    config, index_dir = served
    client = TestClient(create_app(index_dir, config))
    answer = client.post("/search", json={"queries": ["stock market"], "k": 3, "with_text": True}).json()
    hits = answer["results"][0]["hits"]
    stored = {hit["id"]: client.get("/documents", params={"id": hit["id"]}).json()["text"] for hit in hits}
    assert hits and all(hit["text"] == stored[hit["id"]] for hit in hits)
    plain = client.post("/search", json={"queries": ["stock market"], "k": 3}).json()["results"][0]["hits"]
    assert all("text" not in hit for hit in plain)
