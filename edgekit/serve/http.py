"""The HTTP API (Starlette on uvicorn): health, metrics, info, results, one-image predict, live views.

Every endpoint but /healthz checks the bearer token when one is set (``Authorization: Bearer T``, or
``?access_token=T`` for browsers, whose <img> and EventSource cannot send headers). Errors are JSON
``{"error": "..."}`` with a 4xx/5xx status.

Before the token, ``RequestGuard`` checks every request: the ``Host`` header must name this daemon (on a
loopback bind: the bound address, localhost, 127.0.0.1, [::1], or a name given with --allow-host; 421
otherwise: DNS rebinding), a state-changing request (POST) must not come from another origin (``Origin``
not matching ``Host``, or ``Sec-Fetch-Site`` cross-site/same-site: 403), and every query parameter must be
one the endpoint takes, with a valid value (400 naming the allowed parameters).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from edgekit.errors import EdgekitError, UsageError
from edgekit.serve.dashboard import page
from edgekit.serve.engine import StaleInput
from edgekit.serve.images import MAX_PIXELS, BodyTimeout, BodyTooLarge, ImageRejected, inspect_upload, read_body
from edgekit.serve.server import Busy, Stopping

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


# -- the request guard: Host, Origin, query parameters
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
QUERY = {"/v1/predict": ("top_k", "access_token"), "/v1/latest": ("stream", "access_token"),
         "/v1/events": ("stream", "access_token"), "/v1/stream.mjpg": ("stream", "access_token")}  # fmt: skip
# every other path takes access_token alone
STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_STREAM_BODY = 64 * 1024  # a stream's JSON settings
TOP_K = re.compile(r"[0-9]{1,4}")


def _strip_port(host: str) -> str:
    """'Name:port' -> 'name' (lower case; '[v6]:port' -> '[v6]'); a bare IPv6 address stays as it is."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def allowed_hosts(bound: str, extra: tuple[str, ...] | list[str] = ()) -> set[str] | None:
    """The Host names accepted (without port), or None when any is (a non-loopback bind without --allow-host)."""
    from edgekit.serve.config import is_loopback

    if not is_loopback(bound) and not extra:
        return None
    shown = f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound
    return {*LOOPBACK_NAMES, bound.lower(), shown.lower(), *(_strip_port(h) for h in extra)}


def check_query(path: str, raw: bytes) -> str | None:
    """None if every parameter is allowed for ``path`` and valid, else the reason."""
    allowed = QUERY.get(path, ("access_token",))
    names = ", ".join(allowed)
    if not raw:
        return None
    seen: set[str] = set()
    for part in raw.split(b"&"):
        if not part:
            continue
        key_raw, eq, value_raw = part.partition(b"=")
        try:
            key = unquote_to_bytes(key_raw.replace(b"+", b" ")).decode("ascii")
            value = unquote_to_bytes(value_raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return f"query parameter {key_raw[:40]!r} is not valid ASCII/UTF-8; allowed parameters: {names}"
        if key not in allowed:
            return f"unknown query parameter {key[:40]!r}; {path} takes: {names}"
        if key in seen:
            return f"query parameter {key!r} given twice; give it once"
        seen.add(key)
        if not eq:
            return f"query parameter {key!r} has no value; write {key}=VALUE"
        if key == "top_k" and not (TOP_K.fullmatch(value) and 1 <= int(value) <= 1000):
            return f"top_k must be an integer from 1 to 1000 (ASCII digits), got {value[:40]!r}"
        if key == "stream" and not STREAM_ID.fullmatch(value):
            return f"stream must be a stream id (letters, digits, '.', '_', '-'), got {value[:40]!r}"
    return None


class RequestGuard:
    """Pure ASGI middleware: Host (421), cross-origin state-changing requests (403), query parameters (400)."""

    def __init__(self, app, *, hosts: set[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    def _reason(self, scope) -> tuple[int, str] | None:
        headers = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name, value.decode("latin-1"))
        host = headers.get(b"host")
        if self.hosts is not None and host is not None and _strip_port(host) not in self.hosts:
            return 421, (f"Host header {host[:80]!r} does not name this daemon (DNS rebinding?); use "
                         f"http://127.0.0.1:PORT/, or pass --allow-host {_strip_port(host)[:80]} to accept that name")  # fmt: skip
        if scope["method"] not in SAFE_METHODS:
            site = headers.get(b"sec-fetch-site", "").lower()
            origin = headers.get(b"origin")
            if site in ("cross-site", "same-site"):
                return 403, f"cross-origin {scope['method']} refused (Sec-Fetch-Site: {site}); call the API directly"
            if origin is not None:
                parts = urlsplit(origin.strip()) if origin.strip() != "null" else None
                if parts is None or host is None or parts.netloc.lower() != host.strip().lower():
                    return 403, (f"cross-origin {scope['method']} refused: Origin {origin[:80]!r} is not "
                                 f"{host!r}; a web page of another site may not change this daemon")  # fmt: skip
        reason = check_query(scope["path"], scope.get("query_string", b""))
        return None if reason is None else (400, reason)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refused = self._reason(scope)
            if refused is not None:
                await error(*refused)(scope, receive, send)
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


def _stream_param(request: Request) -> str | None:
    """``?stream=ID`` (checked by RequestGuard), or HTTPException 404 when no such stream runs."""
    stream = request.query_params.get("stream")
    if stream is not None and stream not in _daemon(request).streams:
        raise HTTPException(404, f"no stream '{stream}' (GET /v1/streams lists them)")
    return stream


async def latest(request: Request) -> Response:
    stream, hub = _stream_param(request), _daemon(request).hub
    result = hub.latest if stream is None else hub.latest_by_stream.get(stream)
    if result is None:
        return error(404, "no result yet: the source has not delivered a frame (see /readyz)")
    return JSONResponse(result)


async def _table(request: Request) -> Any:
    """The JSON body of a stream's settings, bounded, as a checked StreamTable; HTTPException 400 if not."""
    from edgekit.serve.config import stream_table

    if "application/json" not in request.headers.get("content-type", ""):
        raise HTTPException(415, "send the stream's settings as JSON (Content-Type: application/json)")
    try:
        body = await read_body(request, limit=MAX_STREAM_BODY, timeout=_daemon(request).config.body_timeout)
        data = json.loads(body)
    except BodyTooLarge:
        raise HTTPException(413, f"a stream's settings are at most {MAX_STREAM_BODY} bytes") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"the body is not JSON ({str(exc)[:100]}); send e.g. "
                                 '{"id": "door", "source": "rtsp://cam.local/s"}') from exc  # fmt: skip
    except (BodyTimeout, ClientDisconnect, ImageRejected) as exc:
        raise HTTPException(400, f"the body did not arrive whole ({exc})") from exc
    try:
        return stream_table(data, "stream")
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from exc


async def streams_list(request: Request) -> Response:
    daemon = _daemon(request)
    if request.method == "GET":
        return JSONResponse({"streams": await run_in_threadpool(daemon.stream_status)})
    table = await _table(request)
    if table.id is not None and table.id in daemon.streams:
        return error(409, f"stream '{table.id}' exists; change it with PUT /v1/streams/{table.id}")
    if len(daemon.streams) >= daemon.config.max_streams:
        return error(409, f"{len(daemon.streams)} streams run, the --max-streams limit; remove one first")
    try:
        status = await run_in_threadpool(daemon.add_stream, table)
    except EdgekitError as exc:  # a bad source, or a bundle that does not load
        return error(400, str(exc))
    return JSONResponse(status, status_code=201)


async def stream_one(request: Request) -> Response:
    daemon = _daemon(request)
    sid = request.path_params["id"]
    if not STREAM_ID.fullmatch(sid) or sid not in daemon.streams:
        return error(404, f"no stream '{sid[:64]}' (GET /v1/streams lists them)")
    if request.method == "GET":
        status = next((s for s in await run_in_threadpool(daemon.stream_status) if s["id"] == sid), None)
        return JSONResponse(status) if status is not None else error(404, f"no stream '{sid}'")
    if request.method == "DELETE":
        try:
            await run_in_threadpool(daemon.remove_stream, sid)
        except KeyError:
            return error(404, f"no stream '{sid}'")
        daemon.hub.forget(sid)
        return JSONResponse({"removed": sid})
    table = await _table(request)
    if table.id is not None and table.id != sid:
        return error(400, f"the body's id '{table.id}' is not the URL's '{sid}'; a stream keeps its id")
    try:
        status = await run_in_threadpool(daemon.change_stream, sid, table)
    except KeyError:
        return error(404, f"no stream '{sid}'")
    except EdgekitError as exc:
        return error(400, f"{exc}; the stream runs on unchanged")
    return JSONResponse(status)


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
    return StreamingResponse(_sse(_daemon(request).hub, _stream_param(request)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


async def stream(request: Request) -> Response:
    return StreamingResponse(_mjpeg(_daemon(request).hub, _stream_param(request)),
                             media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})  # fmt: skip


async def dashboard(request: Request) -> Response:
    return HTMLResponse(page(list(_daemon(request).streams)))


async def http_error(request: Request, exc: HTTPException) -> Response:
    return error(exc.status_code, exc.detail or "error")


ROUTES = [
    Route("/", dashboard), Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    Route("/v1/info", info), Route("/v1/latest", latest), Route("/v1/predict", predict, methods=["POST"]),
    Route("/v1/reload", reload, methods=["POST"]), Route("/v1/events", events), Route("/v1/stream.mjpg", stream),
    Route("/v1/streams", streams_list, methods=["GET", "POST"]),
    Route("/v1/streams/{id}", stream_one, methods=["GET", "PUT", "DELETE"]),
]  # fmt: skip


def build_app(daemon) -> Starlette:
    """The ASGI app over a running daemon (its engine, hub, metrics, config, readiness, info and reload)."""
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error})
    app.state.daemon = daemon
    app.add_middleware(TokenAuth, token=daemon.config.token)
    config = daemon.config
    app.add_middleware(RequestGuard, hosts=allowed_hosts(config.host, getattr(config, "allow_host", ())))
    return app


def _unavailable(message: str, retry_after: int = 1) -> tuple[int, Response]:
    response = error(503, message)
    response.headers["Retry-After"] = str(retry_after)
    return 503, response


async def _predict(request: Request, daemon) -> tuple[int, Response]:
    config = daemon.config
    predictor = daemon.predictor
    if predictor is None or predictor.closing:
        return _unavailable("the daemon is stopping; retry against its next start")
    try:
        body = await read_body(request, limit=config.max_body, timeout=getattr(config, "body_timeout", None))
        header = inspect_upload(body, request.headers.get("content-type", ""),
                                max_pixels=getattr(config, "max_pixels", None) or MAX_PIXELS)  # fmt: skip
        prepared = await predictor.prepare(body, header)
        del body
        top_k = request.query_params.get("top_k")  # checked by RequestGuard
        inference = await predictor.infer(prepared, top_k=int(top_k) if top_k else None)
    except BodyTooLarge as exc:  # the rest of an over-size body is not read: end the connection
        response = error(413, str(exc), limit_bytes=config.max_body)
        response.headers["Connection"] = "close"
        return 413, response
    except BodyTimeout as exc:  # the rest of the body may still trickle in: end the connection
        response = error(408, str(exc))
        response.headers["Connection"] = "close"
        return 408, response
    except ClientDisconnect:  # the client left (or was cut off at --max-connections) before its whole body
        return 400, error(400, "the connection closed before the whole body arrived; send the whole image")
    except ImageRejected as exc:
        return exc.status, error(exc.status, str(exc))
    except Busy:
        return _unavailable("busy: the images being decoded fill the decode budget (--decode-budget); retry soon")
    except Stopping:
        return _unavailable("the daemon is stopping; retry against its next start")
    except asyncio.CancelledError:
        if not predictor.closing:
            raise
        # Shutdown: uvicorn's graceful timeout cancelled the request, or Predictor.close cancelled its queued
        # decode. Answer 503 rather than let uvicorn log a traceback and answer 500.
        return _unavailable("the daemon is stopping; retry against its next start")
    except StaleInput as exc:
        return _unavailable(f"{exc}; retry")
    payload = {
        **inference.prediction.to_dict(),
        "inference_ms": round(inference.seconds * 1000, 3),
        "model": inference.model,
        "bundle": inference.bundle_hash[:16],
        "image": {"width": prepared.width, "height": prepared.height},
    }
    return 200, JSONResponse(payload)


async def _sse(hub, stream: str | None = None):
    queue = hub.events.subscribe()
    sent: dict[str, int] = {}  # per stream, the last seq sent: the latest result may also come through the queue
    try:
        yield b"retry: 2000\n\n"
        latest = [hub.latest_by_stream.get(stream)] if stream else list(hub.latest_by_stream.values())
        for message in latest:
            if message is not None:
                sent[message.get("stream", "cam0")] = message["seq"]
                yield f"data: {json.dumps(message, separators=(',', ':'))}\n\n".encode()
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), SSE_PING_SECONDS)
            except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                yield b": ping\n\n"
                continue
            if item is None:
                return
            seq, data, source = item
            if stream is not None and source != stream:
                continue
            if seq > sent.get(source, 0):
                sent[source] = seq
                yield f"data: {data}\n\n".encode()
    finally:
        hub.events.unsubscribe(queue)


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


async def _mjpeg(hub, stream: str | None = None):
    channel = hub.frames_of(stream)
    queue = channel.subscribe()
    try:
        first = hub.latest_jpeg if stream is None else hub.latest_jpeg_by_stream.get(stream)
        if first is not None:
            yield _part(first)
        while True:
            jpeg = await queue.get()
            if jpeg is None:
                return
            yield _part(jpeg)
    finally:
        channel.unsubscribe(queue)
