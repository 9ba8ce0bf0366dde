"""`realtime serve`: the live loop with a web page and an HTTP API instead of a window.

The analysis is :func:`realtime.pipeline.run`, the same loop as `realtime run`; the
server is one more sink per source (:class:`~realtime.serve.hub.Hub`) and a Starlette
app served by uvicorn on a thread beside it (:mod:`realtime.serve.app`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote
from typing import TYPE_CHECKING, Callable

from realtime.errors import RealtimeError

if TYPE_CHECKING:
    from realtime.integrations import Integrations
    from realtime.analyzer import AnalyzerSettings
    from realtime.wiring import OutputSettings

log = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """Where and how to serve.

    Attributes:
        host: address to bind; anything but loopback needs a token.
        port: TCP port (0: any free one).
        token: the secret every request must carry; None = none on loopback, a new
            random one on any other address.
        loop: play video files from the start again when they end.
        pace: play video files at their own frame rate, like a camera (frames that
            analysis cannot keep up with are dropped); False: every frame, as fast as
            analysis goes.
        stall_timeout: seconds a viewer may take no data before it is dropped.
        stream_fps: the most frames a second sent to video viewers.
        jpeg_quality: of the video stream, 1-100.
        video: serve the annotated video (stream, snapshots); False: the counts and
            the API only (no pixels leave the process).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    loop: bool = False
    pace: bool = True
    stall_timeout: float = 10.0
    stream_fps: float = 30.0
    jpeg_quality: int = 80
    video: bool = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(settings: ServeSettings) -> str | None:
    """The token to require: the given one, else none on loopback, else a new one."""
    if settings.token is not None:
        if len(settings.token) < 8:
            raise RealtimeError("--token: use at least 8 characters (or leave it out to get a random one)")
        return settings.token
    return None if is_loopback(settings.host) else secrets.token_urlsafe(18)


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        raise RealtimeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


class _Quiet(logging.Filter):
    """uvicorn's complaint about a stream we ended on purpose (a stalled viewer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def serve(
    source_spec: str | list[str],
    settings: ServeSettings | None = None,
    analyzer_settings: AnalyzerSettings | None = None,
    output: OutputSettings | None = None,
    reconnect: float | None = 300.0,
    on_ready: Callable[[str], None] | None = None,
    integrations: Integrations | None = None,
):
    """Run the live loop on ``source_spec`` (one or several sources, as
    :func:`realtime.pipeline.run`) and serve its page and API until Ctrl-C/SIGTERM.
    When every source has ended (a file without ``loop``) the server goes on showing
    the last frame and the final counts until stopped; when a source was given up (no
    frames for ``reconnect`` seconds) it stops at once, and the run's ``gave_up`` says
    so (the CLI exits 1, as ``realtime run`` does). ``on_ready(url)`` is called
    once the analysis starts (the URL carries the token when there is one).
    ``integrations``: connected MQTT/webhook outboxes, fed by the same loop (their
    counters go to /metrics).
    Returns the run's :class:`~realtime.loop.RunStats`."""
    import uvicorn

    from realtime.pipeline import run
    from realtime.signals import graceful_stop
    from realtime.wiring import OutputSettings
    from realtime.serve.app import create_app
    from realtime.serve.guard import ConnectionGuard
    from realtime.serve.hub import Hub, replay

    settings = settings or ServeSettings()
    token = resolve_token(settings)
    sock = _listen(settings.host, settings.port)
    hub = Hub(settings.jpeg_quality, stall_timeout=settings.stall_timeout, stream_fps=settings.stream_fps,
              video=settings.video, outboxes=integrations.outboxes if integrations is not None else [])
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    # a request whose headers do not arrive within the stall timeout is closed too
    guard = ConnectionGuard(settings.stall_timeout)
    app = create_app(hub, token, hosts=(settings.host, host, shown), abort=guard.abort)
    config = uvicorn.Config(guard.middleware(app), http=guard.protocol(), log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2, log_level="warning")
    logging.getLogger("uvicorn.error").addFilter(_Quiet())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serve-http", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    if not server.started:
        raise RealtimeError(f"the web server on {settings.host}:{settings.port} did not start (see the log above)")
    url = f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")
    started = []

    def on_start(source) -> None:
        if not started and on_ready is not None:
            on_ready(url)
        started.append(source)

    try:
        outputs = dataclasses.replace(output or OutputSettings(), show=False)
        stats = run(source_spec, outputs, analyzer_settings, on_start, None, reconnect,
                    sinks=[hub.sink, *(integrations.sinks if integrations is not None else [])], wrap=replay(settings.pace, settings.loop), timer=hub.timer)
        # a Ctrl-C that came as the source ended (the run finishing its outputs) ends it too
        if not stats.interrupted and not stats.signalled and not stats.gave_up:
            log.warning("the source ended: still serving the last frame and the final counts; Ctrl-C stops")
            stop = threading.Event()
            with graceful_stop(stop):
                while not stop.wait(0.5):
                    pass
    finally:
        hub.close()
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
    return stats
