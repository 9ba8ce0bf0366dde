"""The web side of `realtime serve`: a Starlette app over a :class:`~realtime.serve.hub.Hub`.

Routes (see README: serve): the page (``/``), its files (``/static``), JSON
(``/api/sources``, ``/api/sources/{k}``, ``/api/sources/{k}/summary``,
``/api/sources/{k}/faces``), streams (``/api/sources/{k}/stream.mjpg``, Server-Sent
Events at ``/api/sources/{k}/events``), a still (``/api/sources/{k}/snapshot.jpg``)
and Prometheus metrics (``/metrics``). With a token every route checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from realtime.serve.hub import BOUNDARY, EVENTS, VIDEO, Feed, Hub, Viewer

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "realtime_token"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class TokenMiddleware:
    """Every request must carry the token: ``Authorization: Bearer TOKEN``, or
    ``?token=TOKEN`` (then a cookie is set, so the page's <img> stream and
    EventSource, which cannot send headers, carry it), or that cookie."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    def _given(self, scope) -> tuple[bytes | None, bool]:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if query:
            return query[0].encode(), True
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE.encode():
                return unquote(value.decode("latin-1")).encode(), False
        return None, False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given, from_query = self._given(scope)
        if given is None or not hmac.compare_digest(given, self.token):
            response = PlainTextResponse("401: this server needs its token (see `realtime serve` output)", 401,
                                         headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        if not from_query:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                # quoted: a token holding ";", "," or a space would end the cookie early
                cookie = f"{COOKIE}={quote(self.token.decode(), safe='')}; Path=/; HttpOnly; SameSite=Strict".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class PushResponse(Response):
    """An endless response fed from one viewer's bounded queue. A send that does not
    finish within ``stall_timeout`` seconds (the client stopped reading) drops the
    viewer and closes its connection (``abort(scope)``: at once, without sending what
    the client did not take); a client that goes away is noticed at once."""

    def __init__(self, hub: Hub, feed: Feed, kind: str, media_type: str, abort: Callable[[dict], None] | None = None):
        self.status_code = 200
        self.raw_headers = [(b"content-type", media_type.encode()), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
        self.hub, self.feed, self.kind, self.abort = hub, feed, kind, abort

    async def __call__(self, scope, receive, send):
        viewer = self.hub.subscribe(self.feed, self.kind)
        stalled = False

        async def push(viewer: Viewer) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            while (item := await viewer.queue.get()) is not None:
                await asyncio.wait_for(send({"type": "http.response.body", "body": item, "more_body": True}),
                                       self.hub.stall_timeout)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(push(viewer)), asyncio.ensure_future(gone())]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                if isinstance(task.exception(), asyncio.TimeoutError):
                    stalled = True
                    log.warning("dropped a stalled %s viewer of source %d (no data taken for %.0f s)",
                                self.kind, self.feed.index, self.hub.stall_timeout)
                    if self.abort is not None:
                        self.abort(scope)
                elif task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            self.hub.unsubscribe(self.feed, self.kind, viewer, stalled)


class _Metrics:
    """A Prometheus collector that reads the hub at scrape time."""

    def __init__(self, hub: Hub):
        self.hub = hub

    def collect(self):
        label = ["source"]
        families = {
            "info": GaugeMetricFamily("realtime_source_info", "A source (name with credentials masked)", labels=["source", "name", "kind"]),
            "frames": CounterMetricFamily("realtime_frames", "Frames analysed", labels=label),
            "faces": CounterMetricFamily("realtime_faces", "Faces found, summed over frames", labels=label),
            "in_view": GaugeMetricFamily("realtime_faces_in_view", "Faces in the newest frame", labels=label),
            "fps": GaugeMetricFamily("realtime_fps", "Frames analysed per second (last 3 s)", labels=label),
            "people": GaugeMetricFamily("realtime_people", "Unique people since start (re-identified across tracks unless --no-reid)", labels=label),
            "dropped": CounterMetricFamily("realtime_dropped_frames", "Frames of a live source dropped to keep up", labels=label),
            "reconnects": CounterMetricFamily("realtime_reconnects", "Times a camera or stream was reopened", labels=label),
            "viewers": GaugeMetricFamily("realtime_viewers", "Connected viewers", labels=["source", "kind"]),
            "viewer_dropped": CounterMetricFamily("realtime_viewer_dropped_frames", "Frames skipped for slow viewers (ended viewers)", labels=label),
            "stalled": CounterMetricFamily("realtime_stalled_viewers", "Viewers dropped because they stopped reading", labels=label),
        }
        for feed in list(self.hub.feeds):
            s, k = feed.status(), str(feed.index)
            families["info"].add_metric([k, feed.source.name, feed.source.kind], 1)
            for key in ("frames", "faces", "in_view", "fps", "dropped", "reconnects"):
                families[key].add_metric([k], s[key])
            if "people" in s:
                families["people"].add_metric([k], s["people"])
            for kind, n in s["viewers"].items():
                families["viewers"].add_metric([k, kind], n)
            families["viewer_dropped"].add_metric([k], feed.viewer_dropped)
            families["stalled"].add_metric([k], feed.stalled)
        yield from families.values()
        seconds = GaugeMetricFamily("realtime_stage_seconds", "Mean seconds per frame in each stage (last 100 frames)", labels=["stage"])
        fps = GaugeMetricFamily("realtime_stage_fps", "Frames per second each stage alone could do (last 100 frames)", labels=["stage"])
        for stage, values in self.hub.stage_seconds(100).items():
            seconds.add_metric([stage], values)
            if values > 0:
                fps.add_metric([stage], 1.0 / values)
        yield seconds
        yield fps
        yield from _outbox_metrics(self.hub.outboxes)


#: /metrics of each outbox kind (mqtt, webhook): its stats() key -> (suffix, help, counter?)
_OUTBOX_METRICS = {
    "sent": ("sent", "Messages (MQTT, acknowledged) or events (webhook) delivered", True),
    "dropped": ("dropped", "Dropped: the queue was full (oldest first), or a webhook answered 4xx", True),
    "failures": ("failures", "Failed connections or deliveries (each retried with backoff)", True),
    "queued": ("queued", "Waiting to be delivered", False),
    "reachable": ("connected", "1 while the broker or webhook answers", False),
}


def _outbox_metrics(outboxes: list):
    for outbox in outboxes:
        stats = outbox.stats()
        for key, (suffix, text, counter) in _OUTBOX_METRICS.items():
            family = (CounterMetricFamily if counter else GaugeMetricFamily)(f"realtime_{outbox.kind}_{suffix}", text)
            family.add_metric([], stats[key])
            yield family


def create_app(hub: Hub, token: str | None = None, hosts: tuple[str, ...] = (),
               abort: Callable[[dict], None] | None = None) -> Starlette:
    """The app. Without a token only loopback Host names are answered (a web page
    elsewhere cannot reach a loopback server through DNS rebinding): ``localhost``, ::1,
    127.0.0.1 and ``hosts`` (the address it listens on). ``abort(scope)`` resets a
    request's connection (a stalled viewer's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Metrics(hub))

    def feed_of(request: Request) -> Feed:
        feed = hub.feed(request.path_params["k"])
        if feed is None:
            raise _NotFound(f"no source {request.path_params['k']}")
        return feed

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def sources(request: Request) -> Response:
        return JSONResponse([feed.status() for feed in list(hub.feeds)])

    async def source(request: Request) -> Response:
        return JSONResponse(feed_of(request).status(detail=True))

    async def summary(request: Request) -> Response:
        feed = feed_of(request)
        result = await run_in_threadpool(feed.summary)
        if result is None:
            return JSONResponse({"error": "no people counts without tracking (--no-track)"}, 404)
        return JSONResponse(result)

    async def faces(request: Request) -> Response:
        record = feed_of(request).record()
        return JSONResponse(record) if record is not None else JSONResponse({"error": "no frame yet"}, 404)

    def no_video() -> Response:
        return JSONResponse({"error": "the video is off (serve --no-video): counts and the API only"}, 404)

    async def snapshot(request: Request) -> Response:
        if not hub.video:
            return no_video()
        data = await run_in_threadpool(feed_of(request).encode, hub.jpeg_quality)
        if data is None:
            return JSONResponse({"error": "no frame yet"}, 404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def mjpeg(request: Request) -> Response:
        if not hub.video:
            return no_video()
        return PushResponse(hub, feed_of(request), VIDEO, f"multipart/x-mixed-replace; boundary={BOUNDARY}", abort)

    async def events(request: Request) -> Response:
        return PushResponse(hub, feed_of(request), EVENTS, "text/event-stream", abort)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, 404)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        hub.start(asyncio.get_running_loop())
        yield

    routes = [
        Route("/", page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/sources", sources),
        Route("/api/sources/{k:int}", source),
        Route("/api/sources/{k:int}/summary", summary),
        Route("/api/sources/{k:int}/faces", faces),
        Route("/api/sources/{k:int}/snapshot.jpg", snapshot),
        Route("/api/sources/{k:int}/stream.mjpg", mjpeg),
        Route("/api/sources/{k:int}/events", events),
        Route("/metrics", metrics),
    ]
    middleware = [Middleware(TokenMiddleware, token=token)] if token else [Middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, *hosts])]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={_NotFound: not_found})


class _NotFound(Exception):
    pass
