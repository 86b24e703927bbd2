"""The one ASGI middleware around every request (pure ASGI: no per-request task or
thread): request id, security headers, body-size and time limits, metrics, one log line."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from .observability import JsonLog, Metrics

Scope = dict[str, Any]
Message = dict[str, Any]

_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


def _json_response(status: int, detail: str) -> tuple[Message, Message]:
    body = orjson.dumps({"detail": detail})
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *_SECURITY_HEADERS,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestGuard:
    """Wraps the app: refuses oversized bodies (413) and slow requests (504), and
    measures and logs every request."""

    def __init__(
        self, app: Any, *, max_body: int, timeout: float, metrics: Metrics, log: JsonLog
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout
        self.metrics = metrics
        self.log = log
        self._counters: dict[tuple[str, int], Any] = {}  # label lookups, once per route
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = os.urandom(8).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    *_SECURITY_HEADERS,
                ]
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                body = await self._read_body(scope, receive)
                if body is None:
                    status = 413
                    for message in _json_response(413, "request body too large"):
                        await send_with_headers(message)
                    return
                replayed = False

                async def receive_buffered() -> Message:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    message: Message = await receive()
                    return message

                await self.app(scope, receive_buffered, send_with_headers)
        except TimeoutError:
            if not status:
                status = 504
                for message in _json_response(504, "request took too long"):
                    await send_with_headers(message)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self._counted(path, status).inc()
            self._timed(path).observe(elapsed)
            self.log.write(
                "request",
                request_id=request_id,
                method=scope.get("method"),
                route=path,
                status=status,
                ms=round(elapsed * 1000, 3),
                principal=state.get("principal"),
                version=state.get("version"),
                client=(scope.get("client") or ("-",))[0],
            )

    def _counted(self, path: str, status: int) -> Any:
        child = self._counters.get((path, status))
        if child is None:
            child = self._counters[(path, status)] = self.metrics.requests.labels(path, str(status))
        return child

    def _timed(self, path: str) -> Any:
        child = self._timers.get(path)
        if child is None:
            child = self._timers[path] = self.metrics.latency.labels(path)
        return child

    async def _read_body(self, scope: Scope, receive: Any) -> bytes | None:
        """The whole request body, or None once it passes the limit (declared or sent)."""
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body)
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return None
            if not message.get("more_body", False):
                return bytes(body)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
