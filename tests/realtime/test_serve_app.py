"""The web app of `realtime serve` in this process, with no source and no detector
(the quick run's look at serve; tests/realtime/test_serve.py runs the real command):
the page, the API, the metrics, the Host check and the token, over real HTTP on
127.0.0.1 through uvicorn and the connection guard, as serve wires them."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn")


@contextlib.contextmanager
def app_server(token: str | None = None):
    """(port) of a served app over an empty Hub, wired as ``realtime.serve.serve`` does."""
    from realtime.serve import _listen
    from realtime.serve.app import create_app
    from realtime.serve.guard import ConnectionGuard
    from realtime.serve.hub import Hub

    hub = Hub(80, stall_timeout=2.0)
    sock = _listen("127.0.0.1", 0)
    guard = ConnectionGuard(2.0)
    app = create_app(hub, token, hosts=("127.0.0.1",), abort=guard.abort)
    config = uvicorn.Config(guard.middleware(app), http=guard.protocol(), log_config=None, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=2, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the app did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        hub.close()
        server.should_exit = True
        thread.join(10)
        sock.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_the_page_the_api_and_the_metrics_with_no_source():
    with app_server() as port:
        status, headers, page = get(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and b"static/app.js" in page
        assert get(port, "/static/app.js")[0] == 200
        status, _, body = get(port, "/api/sources")
        assert status == 200 and json.loads(body) == []
        status, _, body = get(port, "/api/sources/0")
        assert status == 404 and json.loads(body) == {"error": "no source 0"}
        status, headers, body = get(port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain") and b"# HELP" in body
        assert get(port, "/", {"Host": "rebinding.example"})[0] == 400  # only loopback names, without a token


def test_a_token_is_required_everywhere():
    with app_server(token="s3cret") as port:
        assert get(port, "/api/sources")[0] == 401
        assert get(port, "/api/sources", {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = get(port, "/api/sources", {"Authorization": "Bearer s3cret"})
        assert status == 200 and json.loads(body) == []
        status, headers, _ = get(port, "/?token=s3cret")
        assert status == 200 and "s3cret" in headers.get("set-cookie", "")
