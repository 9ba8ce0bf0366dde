"""Hardening, round two (part B), with real processes, real files and real sockets on
127.0.0.1: finite HTTP sources, honest damage reports, write errors in .mkv, stalled
viewers, signals, credentials, and the smaller edges (issue 18: items 5, 6, 7, 9, 10,
11, 13)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest

from realtime.sources import mask_credentials
from tests.conftest import SAMPLES
from tests.realtime.test_faults import FlakyServer, decoded_frames, realtime, remux


def finish(proc, timeout: float = 60) -> tuple[str, str]:
    """The process's stdout and stderr once it ends; killed (and the test failed) if it
    is still running after ``timeout`` seconds."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running after {timeout} s: {err[-2000:]}")


def serve_folder(folder: Path) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    """A plain file server on 127.0.0.1 (Content-Length, as any web server); returns it
    and the list of paths requested."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(folder), **kw)

        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests


# -- 5. a file over HTTP is a file ------------------------------------------------------

def test_a_video_file_over_http_is_read_once_every_frame(tmp_path, detector_models):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "people.mp4").write_bytes((SAMPLES / "people.mp4").read_bytes())
    server, requests = serve_folder(tmp_path / "www")
    results = tmp_path / "o.jsonl"
    try:
        proc = realtime("run", "--source", f"http://127.0.0.1:{server.server_address[1]}/people.mp4", "--no-show",
                        "--json", results)
        out, err = finish(proc, 90)  # it ends by itself: a stream replayed for ever would not
    finally:
        server.shutdown()
    assert proc.returncode == 0, err
    assert "a file (3.0 s): every frame, then the end" in err
    assert len(requests) == 1 and "reconnect" not in err, (requests, err)
    frames = [json.loads(line)["frame"] for line in results.read_text().splitlines()]
    assert frames == list(range(75)) and "dropped" not in out


def test_a_live_stream_over_http_stays_live(tmp_path, detector_models):
    server = FlakyServer(remux(SAMPLES / "people.mp4", tmp_path / "people.ts"), outage=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = realtime("run", "--source", f"http://127.0.0.1:{server.server_address[1]}/live.ts", "--no-show",
                        "--reconnect-timeout", "0")
        _, err = proc.communicate(timeout=120)
    finally:
        server.shutdown()
    assert "a live stream: its newest frames" in err and "Traceback" not in err, err


# -- 11. credentials ----------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:Hunter#2secret@cam.example/stream", "rtsp://***@cam.example/stream"),
    ("rtsp://admin:Hun?ter2@cam.example:554/live", "rtsp://***@cam.example:554/live"),
    ("rtsp://admin:a@b/c?d#e@cam.example/x", "rtsp://***@cam.example/x"),
    ("http://cam.example/x.ts?pw=hunter2&q=1", "http://cam.example/x.ts?pw=***&q=1"),
    ("https://cam.example/v.m3u8#access_token=hunter2", "https://cam.example/v.m3u8#***"),
    ("rtmp://live.example/app/hunter2-stream-key", "rtmp://live.example/app/***"),
    ("rtmps://live.example:443/live2/hunter2?x=1", "rtmps://live.example:443/live2/***?x=1"),
    ("srt://cam.example:9000?streamid=hunter2", "srt://cam.example:9000?streamid=***"),
    ("https://cdn.example/v.mp4?X-Amz-Credential=hunter2&access_key=hunter2", "https://cdn.example/v.mp4?X-Amz-Credential=***&access_key=***"),
    ("http://cam.example/video.mjpg", "http://cam.example/video.mjpg"),  # nothing secret: unchanged
])
def test_secrets_in_urls_are_masked(url, shown):
    assert mask_credentials(f"error: cannot open {url}: refused") == f"error: cannot open {shown}: refused"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cam.ts?pw=hunter2#access_token=hunter2",
                                 "rtmp://127.0.0.1:9/live/hunter2", "http://viewer:hunter2@127.0.0.1:9/cam.ts"])
def test_no_secret_reaches_the_error_line(url, detector_models):
    proc = realtime("run", "--source", url, "--no-show", "--reconnect-timeout", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "127.0.0.1:9/" in err and "error:" in err, err
    assert "hunter2" not in err, err


def test_a_source_can_come_from_the_environment_or_a_file(tmp_path, detector_models, monkeypatch):
    url = "http://viewer:hunter2@127.0.0.1:9/cam.ts"
    monkeypatch.setenv("REALTIME_SOURCE", url)
    proc = realtime("run", "--no-show", "--reconnect-timeout", "0")
    _, err = proc.communicate(timeout=60)
    monkeypatch.delenv("REALTIME_SOURCE")
    assert proc.returncode == 1 and "cannot open http://***@127.0.0.1:9/cam.ts" in err, err
    (tmp_path / "sources.txt").write_text(f"\n{url}\n")
    proc = realtime("run", "--no-show", "--reconnect-timeout", "0", "--source-file", tmp_path / "sources.txt")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "cannot open http://***@127.0.0.1:9/cam.ts" in err and "hunter2" not in err, err
    proc = realtime("run", "--no-show", "--source-file", tmp_path / "missing.txt")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "--source-file" in err and "Traceback" not in err, err
