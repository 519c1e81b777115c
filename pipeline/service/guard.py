"""What `htp serve` refuses before any route runs, as one ASGI layer around the app: a wrong API key, a Host it does
not serve (DNS rebinding), a cross-site form POST, a body over the limit however it is sent (chunked too), and more
requests in flight than allowed (idle connections and bodies still arriving are not requests; a body has
a time limit to arrive, and all bodies held at once a byte limit); every response carries security headers."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ALWAYS_ANSWERED = frozenset({"/health"})  # answered even when the in-flight limit is reached
MAX_URL_BYTES = 32_768  # path and query string; a longer one gets a 414 (a long filter belongs in a POST body)
MAX_HEADER_BYTES = 65_536  # all request headers; more get a 431
HEAD_BYTES = 1_048_576  # what the HTTP parser reads of a request's head, so the two above are answered, not reset
DRAIN_FACTOR = 16  # a refused body up to this many times serve.max_body_bytes is read to its end before the 413
KEYLESS = frozenset({"/"})  # the search page holds no index data; its script sends the key in the header
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'",
    ),
]


def host_name(host: str) -> str:
    """The name part of a Host header: `127.0.0.1:8000` -> 127.0.0.1, `[::1]:8000` -> ::1."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Wraps the service's app. `allowed_hosts` None accepts any Host (the service was bound beyond loopback on
    purpose, or an API key guards it); `max_body_bytes` bounds what a request may send, read as it arrives within
    `max_body_seconds`, and all requests together hold at most `max_buffered_bytes` of body at once."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        max_in_flight: int,
        allowed_hosts: Collection[str] | None = None,
        max_body_seconds: float = 10.0,
        max_buffered_bytes: int = 64_000_000,
    ) -> None:
        self.app, self.api_key, self.max_body, self.max_in_flight = app, api_key, max_body_bytes, max_in_flight
        self.allowed_hosts, self.max_body_seconds = allowed_hosts, max_body_seconds
        self.max_buffered, self.buffered = max_buffered_bytes, 0
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            declared = headers.get("content-length", "")
            if refusal[0] == 413 and declared.isdigit() and int(declared) <= DRAIN_FACTOR * self.max_body:
                await _drain(receive, DRAIN_FACTOR * self.max_body, self.max_body_seconds)
            await _reply(send, *refusal)
            return
        held = [0]  # bytes of this request's body counted in self.buffered, released when it is answered
        try:
            try:
                body, refusal = await asyncio.wait_for(self._read_body(receive, held), self.max_body_seconds)
            except TimeoutError:
                await _reply(send, 408, f"the request body did not arrive within {self.max_body_seconds:g} s")
                return
            if refusal is None and scope["path"] not in ALWAYS_ANSWERED and self.in_flight >= self.max_in_flight:
                refusal = 503, f"more than {self.max_in_flight} requests in flight; try again shortly"
            if refusal is not None:
                if refusal[0] == 413:  # let the client finish sending, so it reads the 413 instead of a reset
                    await _drain(receive, DRAIN_FACTOR * self.max_body, self.max_body_seconds)
                await _reply(send, *refusal)
                return
            self.in_flight += 1
            try:
                await self.app(scope, _replay(body, receive), send)
            finally:
                self.in_flight -= 1
        finally:
            self.buffered -= held[0]

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url > MAX_URL_BYTES:
            return 414, f"the URL has {url} bytes; at most {MAX_URL_BYTES} (send a long filter in a POST /search body)"
        head = sum(len(k) + len(v) for k, v in scope.get("headers", []))
        if head > MAX_HEADER_BYTES:
            return 431, f"the request headers have {head} bytes; at most {MAX_HEADER_BYTES}"
        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            return 400, "this service answers only requests addressed to its loopback name (Host header)"
        if self.api_key is not None and not (scope["method"] == "GET" and scope["path"] in KEYLESS):
            given = headers.get(API_KEY_HEADER.lower(), "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return 401, f"missing or wrong API key (send it in the {API_KEY_HEADER} header)"
        if scope["method"] == "POST" and headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # A page on another site can POST a form or text/plain without asking; application/json needs a CORS
            # preflight, which this service never grants.
            return 415, "POST bodies must be sent as application/json"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return 413, f"request body over {self.max_body} bytes"
        return None

    async def _read_body(self, receive: Receive, held: list[int]) -> tuple[list[Message], tuple[int, str] | None]:
        """The request's body messages, read until the end or until they pass a limit (chunked bodies have no
        Content-Length to check beforehand), with the refusal a passed limit earns; `held[0]` counts the bytes
        this request adds to what all requests hold."""
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, None
            size = len(message.get("body", b""))
            if held[0] + size > self.max_body:
                return messages, (413, f"request body over {self.max_body} bytes")
            if self.buffered + size > self.max_buffered:
                return messages, (503, "too many request bodies arriving at once; try again shortly")
            held[0] += size
            self.buffered += size
            if not message.get("more_body", False):
                return messages, None


async def _drain(receive: Receive, limit: int, seconds: float) -> None:
    """Read and drop the rest of a refused body, up to `limit` bytes and `seconds`: a server that closes while the
    client still sends makes the kernel reset the connection, and the client never reads the answer."""
    dropped = 0
    try:
        async with asyncio.timeout(seconds):
            while dropped <= limit:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))
    except TimeoutError:
        return


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then what the connection says next."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return sending


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
