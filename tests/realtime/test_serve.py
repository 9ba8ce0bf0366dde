"""`realtime serve` over real HTTP on 127.0.0.1: the page, every endpoint, the MJPEG
and SSE streams, the token, secrets, a real browser, and 20 viewers at once."""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from realtime.cli import cli
from realtime.integrations import Integrations
from realtime.sinks import Sink
from tests.helpers import shared_path
from tests.helpers import check_record
from realtime.serve.viewerbench import Viewers
from tests.helpers import Served, open_stream, read_jpegs, remux

pytestmark = pytest.mark.slow  # real processes, training or long media: not in the quick run

SUMMARY_KEYS = {"frames", "seconds", "people", "counted_tracks", "unrecognised_tracks", "by_age_group", "by_gender", "by_age_group_and_gender",
                "faces_per_minute", "people_per_minute", "dwell_seconds", "flicker", "tracks"}


def read_events(response: http.client.HTTPResponse, n: int) -> list[tuple[str, dict]]:
    """The first ``n`` Server-Sent Events as (id, parsed data)."""
    events, fields = [], {}
    while len(events) < n:
        line = response.readline()
        assert line, "the stream ended"
        line = line.decode().rstrip("\n")
        if not line:
            if "data" in fields:
                events.append((fields.get("id", ""), json.loads(fields["data"])))
            fields = {}
            continue
        key, _, value = line.partition(": ")
        fields[key] = value
    return events


@pytest.fixture(scope="module")
def served(detector_models):
    """stage_360p.mp4 played at its frame rate, looping, on loopback (no token)."""
    server = Served("--source", shared_path("media", "stage_360p.mp4"), "--loop")
    server.wait_for(lambda: server.json("/api/sources") and server.json("/api/sources")[0]["frames"] > 60, what="60 frames")
    yield server
    server.stop()


def test_page_and_its_files_are_served_with_no_external_assets(served):
    status, headers, page = served.request("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for asset in ("static/app.js", "static/style.css"):
        assert asset.encode() in page
        status, _, body = served.request("/" + asset)
        assert status == 200 and body
        assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body), f"{asset} loads something from elsewhere"
    assert not re.search(rb"(src|href)=\"(https?:)?//", page)


def test_sources_status_summary_and_faces(served):
    sources = served.json("/api/sources")
    assert [s["id"] for s in sources] == [0]
    s = sources[0]
    assert s["name"].endswith("stage_360p.mp4") and s["kind"] == "video" and s["state"] == "running"
    assert s["live"] is True and s["tracking"] is True and s["size"] == [640, 360]
    assert s["fps"] > 1 and s["frames"] > 60 and s["faces"] > 0
    detail = served.wait_for(lambda: (d := served.json("/api/sources/0"))["tracks"] and d, what="a face in view")
    assert detail["in_view"] == len(detail["tracks"]) > 0
    for track in detail["tracks"]:
        assert isinstance(track["track_id"], int) and track["dwell_seconds"] >= 0
    assert detail["people_per_minute"] and all(m["minute"] % 60 == 0 for m in detail["people_per_minute"])
    summary = served.json("/api/sources/0/summary")
    assert set(summary) == SUMMARY_KEYS and summary["people"] >= 1 and summary["frames"] > 60
    assert sum(summary["by_age_group_and_gender"].values()) == summary["people"]
    record = served.json("/api/sources/0/faces")
    check_record(record, record["frame"])
    assert served.request("/api/sources/7")[0] == 404
    assert served.request("/api/sources/7/stream.mjpg")[0] == 404


def test_mjpeg_stream_yields_decodable_frames_of_the_video(served):
    response = open_stream(served.port, "/api/sources/0/stream.mjpg")
    assert response.status == 200 and response.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    parts = read_jpegs(response, 8)
    response.close()
    images = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    assert all(image is not None and image.shape == (360, 640, 3) for image in images)
    assert len({p for p in parts}) >= 6, "the stream repeats frames: it is not live"
    status, headers, still = served.request("/api/sources/0/snapshot.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(still, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)


def test_events_follow_the_jsonl_schema(served):
    response = open_stream(served.port, "/api/sources/0/events")
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    events = read_events(response, 20)
    response.close()
    frames = [record["frame"] for _, record in events]
    assert frames == sorted(frames) and len(set(frames)) == 20
    for event_id, record in events:
        assert event_id == str(record["frame"])
        check_record(record, record["frame"])
        assert all("track_id" in face for face in record["faces"])
    assert any(record["faces"] for _, record in events)


def test_metrics_in_prometheus_format(served):
    first = served.metrics()
    time.sleep(1.0)
    m = served.metrics()
    assert m[("realtime_frames_total", (("source", "0"),))] > first[("realtime_frames_total", (("source", "0"),))]
    assert m[("realtime_fps", (("source", "0"),))] > 1
    for stage in ("decode", "detect", "crop", "classify", "draw"):
        assert m[("realtime_stage_fps", (("stage", stage),))] > 0
    for name in ("realtime_faces_total", "realtime_dropped_frames_total", "realtime_reconnects_total", "realtime_people"):
        assert (name, (("source", "0"),)) in m
    assert ("realtime_viewers", (("kind", "video"), ("source", "0"))) in m


def test_loopback_server_answers_only_loopback_host_names(served):
    assert served.request("/api/sources", {"Host": "localhost"})[0] == 200
    # a page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own name
    assert served.request("/api/sources", {"Host": "attacker.example"})[0] == 400


def test_a_viewer_that_goes_away_is_forgotten(served):
    responses = [open_stream(served.port, "/api/sources/0/stream.mjpg") for _ in range(3)]
    for response in responses:
        read_jpegs(response, 1)
    served.wait_for(lambda: served.json("/api/sources/0")["viewers"]["video"] == 3, 10, "3 viewers")
    for response in responses:
        response.close()
    served.wait_for(lambda: served.json("/api/sources/0")["viewers"]["video"] == 0, 10, "the viewers to be gone")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900", "--virtual-time-budget=4000"]


def test_chromium_shows_the_video_and_counts(served, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium); .ci/run installs it where it can")
    shot = tmp_path / "page.png"

    def browse(*args: str) -> str:
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, served.url],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    served.wait_for(lambda: served.json("/api/sources/0/summary")["people"] > 0, what="a counted person")
    browse(f"--screenshot={shot}")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (900, 1280)
    if os.environ.get("REALTIME_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["REALTIME_KEEP_SCREENSHOT"])
    # the video's panel (left, below the header) shows the stage: bright, varied pixels,
    # not the black placeholder of an <img> that has no frame yet
    video = image[110:500, 40:740]
    assert video.std() > 25 and video.mean() > 20
    dom = browse("--dump-dom")
    numbers = dict(re.findall(r'<dd class="([a-z-]+)">([^<]*)</dd>', dom)[:6])
    assert float(numbers["fps"]) > 0 and int(numbers["frames"]) > 0 and int(numbers["people"]) > 0
    assert re.search(r"<td>[1-9]\d*</td>", dom.split('class="grid"')[1].split("</table>")[0]), "the age x gender grid is all zero"


def test_a_file_that_ends_keeps_its_last_frame_and_counts(detector_models):
    server = Served("--source", shared_path("media", "tv_5frames.mp4"), "--no-pace")
    try:
        s = server.wait_for(lambda: (s := server.json("/api/sources")[0])["state"] == "ended" and s, what="the end")
        assert s["frames"] == 5
        response = open_stream(server.port, "/api/sources/0/stream.mjpg")
        assert cv2.imdecode(np.frombuffer(read_jpegs(response, 1)[0], np.uint8), cv2.IMREAD_COLOR).shape == (460, 820, 3)
        response.close()
        assert server.json("/api/sources/0/summary")["frames"] == 5
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0
    assert "5 frames" in "".join(server.stdout)


class _CtrlCAtTheEnd(Integrations):
    """No outboxes; one sink per source that sends this process SIGINT as it is closed,
    i.e. after the source's last frame, while the run finishes its outputs (the moment a
    user presses Ctrl-C as a file ends)."""

    def __init__(self):
        super().__init__(None)
        self.closed = 0

    @property
    def sinks(self) -> list:
        return [lambda source, analyzer, k, analytics: _SignalOnClose(self)]


class _SignalOnClose(Sink):
    def __init__(self, owner: _CtrlCAtTheEnd):
        self.owner = owner

    def write(self, frame, faces, annotated) -> None:
        pass

    def close(self) -> None:
        self.owner.closed += 1
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_as_the_file_ends_stops_the_server(detector_models, caplog):
    """A SIGINT that comes after a file's last frame, while the run closes its outputs,
    stops `serve` as one during the run does: it returns instead of serving the last
    frame until a second Ctrl-C (which it used to: the run's handler took the signal,
    after its loop had ended). Should it wait again, a second SIGINT 20 s later ends the
    wait, and the test fails on the log and the stats."""
    from realtime.serve import ServeSettings, serve

    integrations = _CtrlCAtTheEnd()
    second = threading.Timer(20, lambda: os.kill(os.getpid(), signal.SIGINT))
    second.start()
    try:
        with caplog.at_level(logging.WARNING, logger="realtime"):
            stats = serve(str(shared_path("media", "tv_5frames.mp4")), ServeSettings(port=0, pace=False),
                          integrations=integrations)
    finally:
        second.cancel()
    assert integrations.closed == 1 and stats.frames == 5
    assert stats.signalled and not stats.interrupted  # every frame was analysed and written
    assert "still serving the last frame" not in caplog.text


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def guarded(detector_models, tmp_path_factory):
    """A non-loopback bind (every address) with a generated token; the source is an
    http:// URL with a password in it, served from this test."""
    media = tmp_path_factory.mktemp("media")
    remux(shared_path("media", "stage_360p.mp4"), media / "stage.ts")
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(media)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    source = f"http://viewer:hunter2secret@127.0.0.1:{files.server_address[1]}/stage.ts"
    server = Served("--host", "0.0.0.0", "--source", source, "--stall-timeout", "3")
    auth = {"Authorization": f"Bearer {server.token}"}
    server.wait_for(lambda: server.json("/api/sources", auth)[0]["frames"] > 10, what="10 frames")
    yield server, auth
    server.stop()
    files.shutdown()


ROUTES = ["/", "/static/app.js", "/api/sources", "/api/sources/0", "/api/sources/0/summary", "/api/sources/0/faces",
          "/api/sources/0/snapshot.jpg", "/api/sources/0/stream.mjpg", "/api/sources/0/events", "/metrics"]


def test_a_token_is_generated_printed_and_required_everywhere(guarded):
    server, auth = guarded
    assert server.token and len(server.token) >= 20
    assert server.url.startswith("http://0.0.0.0:")
    for path in ROUTES:
        assert server.request(path)[0] == 401, path
        assert server.request(path, {"Authorization": "Bearer wrong-token-123"})[0] == 401, path
        assert server.request(path + "?token=wrong-token-123")[0] == 401, path
        assert server.request(path, {"Cookie": "realtime_token=wrong-token-123"})[0] == 401, path
    for path in ROUTES:
        if path.endswith((".mjpg", "/events")):
            response = open_stream(server.port, path, auth)
            assert response.status == 200, path
            response.close()
        else:
            assert server.request(path, auth)[0] == 200, path
    # the page's address carries the token once; the answer sets a cookie that the
    # <img> stream and EventSource (which cannot send headers) then carry
    status, headers, _ = server.request(f"/?token={server.token}")
    assert status == 200
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and cookie == f"realtime_token={server.token}"
    response = open_stream(server.port, "/api/sources/0/stream.mjpg", {"Cookie": cookie})
    assert response.status == 200 and read_jpegs(response, 1)
    response.close()


def test_secrets_never_leak(guarded):
    server, auth = guarded
    bodies = [server.request(path, auth)[2] for path in ROUTES if not path.endswith((".mjpg", "/events"))]
    response = open_stream(server.port, "/api/sources/0/events", auth)
    read_events(response, 3)
    response.close()
    name = server.json("/api/sources", auth)[0]["name"]
    assert name.startswith("http://***@127.0.0.1:")  # the whole userinfo is masked
    for body in bodies:
        assert b"hunter2secret" not in body
    logs = "".join(server.stdout) + "".join(server.stderr)
    assert "hunter2secret" not in logs
    # the token is printed once, in the address; never in the log
    assert server.token not in "".join(server.stderr)


def test_bad_token_and_busy_port_are_one_line_errors():
    result = CliRunner().invoke(cli, ["serve", "--source", "x.mp4", "--token", "short"])
    assert result.exit_code == 1 and "--token" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--source", "x.mp4", "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output


def test_twenty_viewers_and_a_stalled_one_do_not_stop_analysis(detector_models):
    """With 20 MJPEG viewers and 1 that never reads: every viewer gets frames, the one
    that never reads is dropped, analysis keeps counting frames, and the viewers are
    forgotten when they go. (What viewers cost in fps is the benchmark command's to
    measure: ``python -m realtime.serve.viewerbench``, README "Viewers never slow the
    analysis".)"""
    # large JPEGs fill the never-read socket's kernel buffers sooner (a loaded machine analyses slowly)
    server = Served("--source", shared_path("media", "stage_360p.mp4"), "--loop", "--no-pace", "--stall-timeout", "2",
                    "--jpeg-quality", "100")
    key = ("realtime_frames_total", (("source", "0"),))
    stalled_key = ("realtime_stalled_viewers_total", (("source", "0"),))
    try:
        server.wait_for(lambda: server.metrics()[key] > 20, what="20 frames")
        stalled = Viewers(server.port, "/api/sources/0/stream.mjpg", 0, stalled=1)
        viewers = Viewers(server.port, "/api/sources/0/stream.mjpg", 20)
        try:
            start = server.metrics()[key]
            server.wait_for(lambda: min(viewers.parts.values()) >= 3, 60, "every viewer to get 3 frames")
            server.wait_for(lambda: server.metrics()[stalled_key] >= 1, 180, "the viewer that never reads to be dropped")
            assert server.metrics()[key] > start, "analysis stopped while watched"
            assert server.json("/api/sources/0")["viewers"]["video"] == 20
        finally:
            viewers.close()
            stalled.close()
        server.wait_for(lambda: server.json("/api/sources/0")["viewers"]["video"] == 0, 10, "the viewers to go")
        after = server.metrics()[key]
        server.wait_for(lambda: server.metrics()[key] > after, 30, "analysis to go on")
    finally:
        server.stop()


def test_the_viewer_benchmark_reports_its_figures(detector_models, capsys):
    """``python -m realtime.serve.viewerbench`` (the README's figure): one short round,
    every figure there and sane; a source that does not open is one line, exit 1."""
    from realtime.serve.viewerbench import main

    assert main([str(shared_path("media", "stage_360p.mp4")), "3", "1", "1", "1"]) == 0
    line = capsys.readouterr().out
    numbers = dict(re.findall(r"(0 viewers|3 viewers \+ 1 stalled|dropped:) (\d+(?:\.\d+)?)", line))
    assert float(numbers["0 viewers"]) > 0 and float(numbers["3 viewers + 1 stalled"]) > 0, line
    assert "dropped:" in numbers, line  # (3 s of --stall-timeout may outlast one short round)
    assert main([str(shared_path("media")) + "/missing.mp4"]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_a_source_given_up_ends_serve_with_exit_1(tmp_path, detector_models):
    """Its only source given up (no frames for --reconnect-timeout), serve stops by
    itself, as `run` does: exit 1, the reason in one line, the summary, no traceback."""
    from tests.helpers import SAMPLES, FlakyServer, realtime

    server = FlakyServer(remux(SAMPLES / "people.mp4", tmp_path / "people.ts"), outage=10**6)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = realtime("serve", "--port", "0", "--source", f"http://127.0.0.1:{server.server_address[1]}/live.ts",
                        "--reconnect-timeout", "2")
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        server.shutdown()
    assert proc.returncode == 1, err
    assert len([line for line in err.splitlines() if "gave up after" in line]) == 1, err
    assert "frames in" in out and "Traceback" not in err and "still serving" not in err
