"""The HTTP API (Starlette on uvicorn): health, metrics, info, results, one-image predict, live views.

Every endpoint but /healthz checks the bearer token when one is set (``Authorization: Bearer T``, or
``?access_token=T`` for browsers, whose <img> and EventSource cannot send headers). Errors are JSON
``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from edgekit.serve.dashboard import PAGE
from edgekit.serve.images import BodyTooLarge, ImageRejected, decode_upload, read_body

BOUNDARY = "edgekit-frame"
SSE_PING_SECONDS = 15.0


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class TokenAuth:
    """Pure ASGI middleware (streaming-safe): a bearer token on every path except the open ones."""

    def __init__(self, app, *, token: str | None, open_paths: tuple[str, ...] = ("/healthz",)) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.open_paths = open_paths

    def _presented(self, scope) -> bytes | None:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return value[7:].strip()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return query["access_token"][0].encode() if "access_token" in query else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.token and scope["path"] not in self.open_paths:
            presented = self._presented(scope)
            if presented is None or not hmac.compare_digest(presented, self.token):
                reason = "missing" if presented is None else "wrong"
                response = error(401, f"{reason} bearer token: send 'Authorization: Bearer <token>'")
                response.headers["WWW-Authenticate"] = 'Bearer realm="edgekit"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _daemon(request: Request):
    return request.app.state.daemon


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    ready, detail = _daemon(request).readiness()
    return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    return PlainTextResponse(_daemon(request).metrics.render(), media_type="text/plain; version=0.0.4")


async def info(request: Request) -> Response:
    return JSONResponse(_daemon(request).info())


async def latest(request: Request) -> Response:
    result = _daemon(request).hub.latest
    if result is None:
        return error(404, "no result yet: the source has not delivered a frame (see /readyz)")
    return JSONResponse(result)


async def predict(request: Request) -> Response:
    daemon = _daemon(request)
    status, response = await _predict(request, daemon)
    daemon.metrics.predict_requests.inc(status=str(status))
    return response


async def reload(request: Request) -> Response:
    daemon = _daemon(request)
    ok, message = await run_in_threadpool(daemon.reload)
    if not ok:
        return error(409, f"reload failed, the previous bundle keeps running: {message}")
    return JSONResponse({"reloaded": True, "message": message, "bundle_hash": daemon.engine.bundle.hash})


async def events(request: Request) -> Response:
    return StreamingResponse(_sse(_daemon(request).hub), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


async def stream(request: Request) -> Response:
    return StreamingResponse(_mjpeg(_daemon(request).hub), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})  # fmt: skip


async def dashboard(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def http_error(request: Request, exc: HTTPException) -> Response:
    return error(exc.status_code, exc.detail or "error")


ROUTES = [
    Route("/", dashboard), Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    Route("/v1/info", info), Route("/v1/latest", latest), Route("/v1/predict", predict, methods=["POST"]),
    Route("/v1/reload", reload, methods=["POST"]), Route("/v1/events", events), Route("/v1/stream.mjpg", stream),
]  # fmt: skip


def build_app(daemon) -> Starlette:
    """The ASGI app over a running daemon (its engine, hub, metrics, config, readiness, info and reload)."""
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error})
    app.state.daemon = daemon
    app.add_middleware(TokenAuth, token=daemon.config.token)
    return app


async def _predict(request: Request, daemon) -> tuple[int, Response]:
    config = daemon.config
    try:
        body = await read_body(request, limit=config.max_body)
        image = decode_upload(body, request.headers.get("content-type", ""))
    except BodyTooLarge as exc:
        return 413, error(413, str(exc), limit_bytes=config.max_body)
    except ImageRejected as exc:
        return exc.status, error(exc.status, str(exc))
    top_k = request.query_params.get("top_k", "")
    k = int(top_k) if top_k.isdigit() and 0 < int(top_k) <= 1000 else None
    inference = await run_in_threadpool(daemon.engine.run, image, top_k=k)
    payload = {
        **inference.prediction.to_dict(),
        "inference_ms": round(inference.seconds * 1000, 3),
        "model": inference.model,
        "bundle": inference.bundle_hash[:16],
        "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
    }
    return 200, JSONResponse(payload)


async def _sse(hub):
    queue = hub.events.subscribe()
    sent = 0  # the last seq sent: the latest result may also arrive through the queue
    try:
        yield b"retry: 2000\n\n"
        latest = hub.latest
        if latest is not None:
            sent = latest["seq"]
            yield f"data: {json.dumps(latest, separators=(',', ':'))}\n\n".encode()
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), SSE_PING_SECONDS)
            except TimeoutError:
                yield b": ping\n\n"
                continue
            if item is None:
                return
            seq, data = item
            if seq > sent:
                sent = seq
                yield f"data: {data}\n\n".encode()
    finally:
        hub.events.unsubscribe(queue)


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


async def _mjpeg(hub):
    queue = hub.frames.subscribe()
    try:
        if hub.latest_jpeg is not None:
            yield _part(hub.latest_jpeg)
        while True:
            jpeg = await queue.get()
            if jpeg is None:
                return
            yield _part(jpeg)
    finally:
        hub.frames.unsubscribe(queue)
