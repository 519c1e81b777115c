"""`htp serve`: one index and its encoder loaded once behind a JSON API and a search page, with queries that
arrive together encoded in one forward pass (micro-batching) and a hot swap to each rebuilt version."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_TYPE
from pydantic import BaseModel, Field, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from htp.errors import EncoderError
from indexes.errors import IndexStoreError
from indexes.store import IndexFolderError, current_version
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.query.filters import MAX_DEPTH
from pipeline.query.modes import MODES
from pipeline.query.request import RequestLimits, SearchRequest
from pipeline.query.searcher import Searcher
from pipeline.service.guard import Guard
from pipeline.service.observe import Observer
from pipeline.service.openai_api import embeddings_router

if TYPE_CHECKING:
    import numpy as np

    from pipeline.ingest.changes import ChangeSummary

LOG = logging.getLogger("htp.serve")
DEPTH_RULE = f"a filter may nest at most {MAX_DEPTH} levels"


class DocumentsRequest(BaseModel):
    """POST /documents: records to add (an id already indexed is replaced), as `htp add` reads them."""

    documents: list[dict] = Field(min_length=1)


class BatchRequest(BaseModel):
    """POST /search: several queries answered in one call."""

    queries: list[str] = Field(min_length=1)
    k: StrictInt | None = None  # `"k": true` or `"k": "3"` is refused, not read as a number
    mode: str | None = None
    where: dict | None = None  # a metadata filter (pipeline.query.filters), the same for every query of the batch
    with_text: bool = False  # each hit also carries its document's whole text (a client then needs no second call)


@dataclass
class Job:
    """One query waiting for its batch, bound to the index version it arrived under."""

    searcher: Searcher
    request: SearchRequest
    query: str
    allowed: np.ndarray | None  # the request's filter, evaluated once on the searcher's version
    future: asyncio.Future


class Index:
    """The live Searcher, replaced when CURRENT names another version; readers keep the one they took. Every
    request checks CURRENT first, so none answers from a version a finished change or build has replaced: the
    new version is opened before the answer (one open at a time; requests that arrive meanwhile wait for it). A
    version that fails to open is not tried again until CURRENT changes or /reload asks; the old one answers."""

    def __init__(self, index_dir: Path, config: Config | None) -> None:
        self.index_dir, self.config = index_dir, config
        self._lock = threading.Lock()
        self.searcher = Searcher(index_dir, config)
        self.version = self.searcher.index.path.name
        self._reloading = threading.Lock()
        self.failed: dict[str, str] = {}  # version -> why it could not be opened

    def _to_open(self) -> str | None:
        """The version CURRENT names when it is not the loaded one and has not failed to open, else None."""
        name = current_version(self.index_dir)
        return name if name is not None and name != self.version and name not in self.failed else None

    def stale(self) -> bool:
        """Whether there is a version to open (a small read: an event loop may ask before handing the open to a
        thread)."""
        return self._to_open() is not None

    def current(self) -> Searcher:
        """The searcher of the version CURRENT names now, opened here first when it changed (blocking: call it from
        a worker thread, or ask `stale` first on an event loop)."""
        if not self.stale():
            return self.searcher
        with self._reloading:  # one open at a time; whoever waited finds it done
            if (name := self._to_open()) is not None:
                self._open(name)
        return self.searcher

    def reload(self) -> Searcher:
        """Open the version CURRENT names now, in the calling thread, raising what stops it (POST /reload)."""
        with self._reloading:
            name = current_version(self.index_dir)
            if name is not None and name != self.version:
                self.failed.pop(name, None)
                self._open(name, raise_errors=True)
        return self.searcher

    def _open(self, name: str, raise_errors: bool = False) -> None:
        try:
            fresh = self.searcher.reopened()  # reuses the loaded model when the encoder is the same
        except Exception as err:  # noqa: BLE001 - whatever stops the new version, the old one keeps answering
            with self._lock:
                self.failed[name] = str(err)
            LOG.error("version %s could not be opened; still serving %s: %s", name, self.version, err)
            if raise_errors:
                raise
            return
        with self._lock:
            # installed only while CURRENT still names it: a slower open of an older version never wins
            if fresh.index.path.name == current_version(self.index_dir):
                self.searcher, self.version = fresh, fresh.index.path.name

    async def fresh(self) -> Searcher:
        """`current` from an event loop: the open, when there is one, runs in a worker thread."""
        if not self.stale():
            return self.searcher
        return await asyncio.get_running_loop().run_in_executor(None, self.current)


class MicroBatcher:
    """Queries queued while a pass runs, and those that arrive within `wait_ms` of the first, are searched
    together, at most `size` at a time, so concurrent clients share forward passes instead of queueing one pass
    each. The first query waits only when others are likely to follow: the last pass had several queries, or
    `others()` (requests in flight besides this one) is above zero; a lone client's query starts at once."""

    def __init__(
        self,
        wait_ms: float,
        size: int,
        observer: Observer,
        model_thread: Executor,
        others: Callable[[], int] = lambda: 0,
    ) -> None:
        self.wait, self.size, self.observer, self.others = wait_ms / 1000, size, observer, others
        self.model_thread = model_thread
        self.last_pass = 0  # queries in the last pass
        self.queue: asyncio.Queue[Job] | None = None
        self.worker: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(
        self, searcher: Searcher, request: SearchRequest, query: str, allowed: np.ndarray | None
    ) -> list[dict]:
        loop = asyncio.get_running_loop()
        queue = self.queue if self.loop is loop else None
        if queue is None:  # a queue and its worker belong to one event loop (a test client may start several)
            queue = asyncio.Queue()
            self.queue, self.loop = queue, loop
            self.worker = loop.create_task(self._run(queue))
        job = Job(searcher, request, query, allowed, loop.create_future())
        await queue.put(job)
        return await job.future

    async def _run(self, queue: asyncio.Queue[Job]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            expect_more = self.last_pass > 1 or self.others() > 0
            deadline = loop.time() + (self.wait if expect_more else 0.0)
            while len(batch) < self.size:
                if not queue.empty():  # what queued during the last pass joins at once, with no wait
                    batch.append(queue.get_nowait())
                    continue
                if (left := deadline - loop.time()) <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
            self.last_pass = len(batch)
            groups: dict[tuple[int, str, str], list[Job]] = {}
            for job in batch:  # one pass per (version, mode, filter)
                key = (id(job.searcher), job.request.mode, json.dumps(job.request.where, sort_keys=True))
                groups.setdefault(key, []).append(job)
            for jobs in groups.values():
                try:
                    self.observer.batch.observe(len(jobs))
                    needs_model = MODES[jobs[0].request.mode].needs_encoder
                    thread = self.model_thread if needs_model else None  # BM25 needs no model
                    ranked = await loop.run_in_executor(thread, _rank, jobs, self.observer)
                except Exception as err:  # noqa: BLE001 - handed to every waiting request, which reports it
                    for job in jobs:
                        job.future.set_exception(err)
                    continue
                for job, hits in zip(jobs, ranked):
                    job.future.set_result(hits)


def _rank(jobs: list[Job], observer: Observer) -> list[list[dict]]:
    """One batch's hits with their documents, read in one call: run in a worker thread, so the event loop
    never waits on the model, the indexes or docs.parquet."""
    searcher, first = jobs[0].searcher, jobs[0].request
    depth = max(job.request.k for job in jobs)
    forward = searcher.encoder_seconds()
    together = replace(first, queries=tuple(job.query for job in jobs), k=depth)
    rankings = searcher.ranked(together, jobs[0].allowed)
    if searcher.encoder_seconds() > forward:  # BM25-only batches run no forward pass
        observer.forward.observe(searcher.encoder_seconds() - forward)
    ranked = [hits[: job.request.k] for job, hits in zip(jobs, rankings)]
    return [[asdict(hit) for hit in found] for found in searcher.hits(ranked)]


def _with_texts(searcher: Searcher, results: list[list[dict]]) -> None:
    """Give every hit its document's whole text, all documents read in one call (run off the event loop)."""
    wanted = sorted({hit["id"] for hits in results for hit in hits})
    texts = {doc["id"]: doc["text"] for doc in searcher.index.documents(wanted)}
    for hits in results:
        for hit in hits:
            hit["text"] = texts[hit["id"]]


def _load_encoder(searcher: Searcher) -> None:
    """Load the searcher's encoder (about 10 s for the default model) before any request needs it."""
    try:
        searcher.encoder  # noqa: B018 - the property loads it
    except Exception as err:  # noqa: BLE001 - the first request that needs the model reports the error to its client
        LOG.warning("the encoder could not be loaded at start (the first dense request will say why): %s", err)


def create_app(
    index_dir: Path,
    config: Config | None = None,
    api_key: str | None = None,
    allowed_hosts: Collection[str] | None = None,
) -> ASGIApp:
    """The service over the index at `index_dir`, inside its Guard: every endpoint but the page needs `api_key`
    (header X-API-Key) when one is given, and only `allowed_hosts`
    are served when given (None: any Host)."""
    settings = (config or Config()).serve
    index = Index(Path(index_dir), config)
    observer = Observer(settings.access_log)
    # Every forward pass runs on this one thread: torch's OpenMP keeps a worker team per calling thread, and with a
    # second team alive on 2 cores libgomp stops spinning and sleeps between regions (a lone query 14 -> 21 ms).
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="htp-model")
    batcher = MicroBatcher(settings.batch_wait_ms, settings.batch_size, observer, model_thread)
    if settings.warm_up:
        model_thread.submit(_load_encoder, index.searcher)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        model_thread.shutdown(wait=False)  # its thread (and torch's team behind it) ends with the service

    # No /docs page: FastAPI's loads its scripts from a third-party CDN (broken offline); /openapi.json stays.
    app = FastAPI(
        title="htp-index",
        description="HTP embeddings, FAISS and BM25 search over one index",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        """A 422 naming each fault, without echoing the input back (an Infinity there made the 422 itself fail
        to render, a 500)."""
        kept = ("type", "loc", "msg")
        return JSONResponse({"detail": [{key: e[key] for key in kept if key in e} for e in err.errors()]}, 422)

    @app.exception_handler(StarletteHTTPException)  # what FastAPI's body parser raises
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        if isinstance(err.__cause__, RecursionError):  # FastAPI's body parser ran out of stack on deep nesting
            return JSONResponse({"detail": f"the request body nests too deeply to read; {DEPTH_RULE}"}, 400)
        return await http_exception_handler(request, err)

    @app.exception_handler(EncoderError)
    @app.exception_handler(IndexStoreError)
    @app.exception_handler(PipelineError)
    async def user_error(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, 400)

    limits = RequestLimits.of(settings)

    async def answer(
        queries: list[str], k: int | None, mode: str | None, where: dict | str | None, with_text: bool = False
    ) -> dict:
        searcher = await index.fresh()
        request = searcher.request(queries, k, mode, where, limits)
        allowed = searcher.allowed(request.where)  # evaluated once: a bad filter is a 400 before any encoding
        began = time.perf_counter()
        ranked = await asyncio.gather(*(batcher.submit(searcher, request, q, allowed) for q in request.queries))
        if with_text:
            await asyncio.get_running_loop().run_in_executor(None, _with_texts, searcher, ranked)
        return {
            "version": searcher.index.path.name,
            "mode": request.mode,
            "k": request.k,
            "took_ms": round(1000 * (time.perf_counter() - began), 1),
            "results": [{"query": query, "hits": hits} for query, hits in zip(request.queries, ranked)],
        }

    @app.get("/search")
    async def search_one(q: str, k: int | None = None, mode: str | None = None, where: str | None = None) -> dict:
        """Ranked hits for one query (`where`: a metadata filter as JSON)."""
        out = await answer([q], k, mode, where)
        return {**{key: out[key] for key in ("version", "mode", "k", "took_ms")}, **out["results"][0]}

    @app.post("/search")
    async def search_many(body: BatchRequest) -> dict:
        """Ranked hits for each query of a batch."""
        return await answer(body.queries, body.k, body.mode, body.where, body.with_text)

    def writable() -> None:
        """Writes need the API key, or a service told to take them without one."""
        if api_key is None and not settings.allow_writes_without_key:
            raise HTTPException(
                403,
                "this service takes no writes: start it with --api-key (or HTP_API_KEY), or set "
                "serve.allow_writes_without_key: true to let any client that reaches it add and delete documents",
            )

    def changed(run: Callable[[Searcher], ChangeSummary]) -> dict:
        """Run a live change with the loaded model, then switch to the version it wrote; a change that finds the
        index busy gets a 409. The write side (pipeline.ingest) is imported by the first write, not at start."""
        live = index.current()
        try:
            summary = run(live)
        except IndexFolderError as err:
            raise HTTPException(409, str(err)) from err
        answer = {
            **{k: v for k, v in asdict(summary).items() if k != "version_dir"},
            "version": summary.version_dir.name,
        }
        try:
            index.reload()
        except Exception as err:  # noqa: BLE001 - the change is written and live on disk; say the swap failed
            answer["served_version"], answer["swap_error"] = index.version, str(err)
        return answer

    @app.post("/documents")
    def add_documents(body: DocumentsRequest) -> dict:
        """Add records (replacing those whose id is indexed), encoding only them, as a new version."""
        writable()
        if len(body.documents) > settings.max_write_documents:
            raise HTTPException(
                413,
                f"{len(body.documents)} documents in one request; at most {settings.max_write_documents} "
                "(send them in several requests, or use htp add)",
            )
        with tempfile.TemporaryDirectory(prefix="htp-add-") as folder:
            records = Path(folder) / "records.jsonl"
            records.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in body.documents))
            from pipeline.ingest import changes

            return changed(
                lambda live: changes.add(index.index_dir, records, config, live.encoder, Path(folder), live.index)
            )

    @app.delete("/documents")
    def delete_by_query(id: Annotated[list[str], Query()]) -> dict:  # noqa: A002 - the query parameter's name
        """Delete the documents whose ids the query string repeats (`?id=a&id=b`; any id, as GET /documents?id=
        takes it), all in one new version."""
        return delete_documents(id)

    @app.delete("/documents/{doc_id:path}")
    def delete_document(doc_id: str) -> dict:
        """Delete one document, as a new version."""
        return delete_documents([doc_id])

    def delete_documents(ids: list[str]) -> dict:
        writable()
        held = set(index.current().index.doc_ids)
        unknown = [doc_id for doc_id in dict.fromkeys(ids) if doc_id not in held]
        if unknown:
            raise HTTPException(404, f"no document(s) {', '.join(map(repr, unknown[:5]))} in this index")
        from pipeline.ingest import changes

        return changed(lambda live: changes.delete(index.index_dir, ids, config, live.index))

    @app.get("/documents")
    def document_by_query(id: str) -> dict:  # noqa: A002 - the query parameter's name
        """One stored document, its id in the query string: any id, "." and ".." segments too, which clients
        and browsers rewrite in a path."""
        return document(id)

    @app.get("/documents/{doc_id:path}")  # ids may hold "/"
    def document(doc_id: str) -> dict:
        """One stored document."""
        try:
            return index.current().index.documents([doc_id])[0]
        except IndexStoreError as err:
            raise HTTPException(404, f"no document {doc_id!r} in this index") from err

    @app.get("/info")
    def info() -> dict:
        """The live version's manifest, and the search modes it can answer (the page's mode switch)."""
        live = index.current()  # one searcher, so the version named is the manifest's own
        return {
            "version": live.index.path.name,
            **asdict(live.index.manifest),
            "modes": [{"name": m.name, "description": m.description} for m in live.modes()],
            "default_mode": live.settings.mode,
        }

    app.include_router(embeddings_router(index.fresh, settings, model_thread))

    @app.get("/health")
    def health() -> dict:
        """Up, the version served, and whether the encoder is loaded (dense requests then wait for no model load)."""
        live = index.current()
        return {"status": "ok", "version": live.index.path.name, "encoder_loaded": live.encoder_loaded}

    @app.post("/reload")
    def reload() -> dict:
        """Switch to the version CURRENT names now (every request also starts that switch in the background)."""
        return {"version": index.reload().index.path.name}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        """The search page."""
        return resources.files("pipeline.service").joinpath("search.html").read_text(encoding="utf-8")

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics: requests by endpoint and status, latencies, batch sizes, forward-pass time, the
        live version and its documents."""
        live = index.current()
        return Response(observer.render(live.index.path.name, len(live.index.doc_ids)), media_type=METRICS_TYPE)

    guarded = Guard(
        app,
        api_key,
        settings.max_body_bytes,
        settings.max_concurrency,
        allowed_hosts,
        settings.max_body_seconds,
        settings.max_buffered_bytes,
    )
    batcher.others = lambda: guarded.in_flight - 1  # requests the guard let in, besides the one asking
    return observer.around(guarded)
