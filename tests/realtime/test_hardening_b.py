"""Hardening, round two (part B), with real processes, real files and real sockets on
127.0.0.1: finite HTTP sources, honest damage reports, write errors in .mkv, stalled
viewers, signals, credentials, and the smaller edges (issue 18: items 5, 6, 7, 9, 10,
11, 13)."""

from __future__ import annotations

import contextlib
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

from realtime.urls import mask_credentials
from tests.helpers import (
    SAMPLES,
    FlakyServer,
    Served,
    decoded_frames,
    encode,
    open_stream,
    outputs_agree,
    python_start_seconds,
    read_jpegs,
    realtime,
    remux,
    wait_for_lines,
)


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

@pytest.mark.slow  # a real process reading a served video
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


@pytest.mark.slow  # a real process on a live stream
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


@pytest.mark.slow  # a real process per URL
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cam.ts?pw=hunter2#access_token=hunter2",
                                 "rtmp://127.0.0.1:9/live/hunter2", "http://viewer:hunter2@127.0.0.1:9/cam.ts"])
def test_no_secret_reaches_the_error_line(url, detector_models):
    proc = realtime("run", "--source", url, "--no-show", "--reconnect-timeout", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "127.0.0.1:9/" in err and "error:" in err, err
    assert "hunter2" not in err, err


@pytest.mark.slow  # real processes
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


# -- 6. damage reports say what is missing --------------------------------------------

@pytest.fixture(scope="module")
def clip_frames():
    with av.open(str(SAMPLES / "people.mp4")) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)] * 3  # 225 frames, 9 s


def _warnings_about(err: str, name: str) -> list[str]:
    return [line for line in err.splitlines() if name in line and line.startswith("WARNING")]


@pytest.mark.slow  # encodes and annotates a clip in a process
def test_an_intact_mkv_that_starts_late_is_not_called_damaged(tmp_path, clip_frames, detector_models):
    late = encode(tmp_path / "late.mkv", clip_frames, [0.85 + i / 25 for i in range(len(clip_frames))])
    proc = realtime("annotate", late, "-o", tmp_path / "o.mp4", "--json", tmp_path / "o.jsonl")
    _, err = finish(proc, 120)
    assert proc.returncode == 0, err
    assert _warnings_about(err, "late.mkv") == [], err
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == len(clip_frames)


@pytest.mark.slow  # encodes and annotates a clip in a process
def test_frames_lost_in_the_middle_are_named_and_the_end_is_not_called_unreadable(tmp_path, clip_frames, detector_models):
    clip = encode(tmp_path / "clip.mp4", clip_frames)
    with av.open(str(clip)) as c:
        packets = sorted(((p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size), key=lambda p: p[0])
    data = bytearray(clip.read_bytes())
    for _, pos, size in packets[136:151]:  # the data of frames 136-150 lost (zeros), the index intact
        data[pos: pos + size] = bytes(size)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    proc = realtime("annotate", damaged, "-o", tmp_path / "o.mp4", "--json", tmp_path / "o.jsonl")
    _, err = finish(proc, 120)
    assert proc.returncode == 0, err
    report = _warnings_about(err, "damaged.mp4")
    assert len(report) == 1 and "unreadable" not in report[0], err
    frames = [json.loads(line)["frame"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    missing = sorted(set(range(len(clip_frames))) - set(frames))
    assert frames[-1] == len(clip_frames) - 1 and missing, frames  # the end is there
    assert f"frames ~{missing[0]}-{missing[-1]} missing" in report[0], (missing, report)
    assert 136 <= missing[0] and missing[-1] <= 160  # about where the data was lost (B-frames move it a little)


# -- 7. a video cut by a write error claims what plays ----------------------------------

@pytest.mark.slow  # a real write error mid-video (about 10 s each)
@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_write_error_claims_what_plays_and_the_jsonl_agrees(tmp_path, clip_frames, detector_models, suffix):
    import resource

    from engines.backends import onnx_for
    from engines.model import DEFAULT_WEIGHTS
    onnx_for(DEFAULT_WEIGHTS)  # the model's export in the cache first: under the limit only the outputs are written
    clip = encode(tmp_path / "clip.mp4", clip_frames)
    out, results = tmp_path / f"o{suffix}", tmp_path / "o.jsonl"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    table = tmp_path / ("o.csv" if suffix == ".mkv" else "o.parquet")  # both kinds of table
    proc = realtime("annotate", clip, "-o", out, "--json", results, "--table", table, preexec_fn=limit_file_size)
    _, err = finish(proc, 180)
    assert proc.returncode == 1, err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    claimed = int(line.split("holds the first ")[1].split()[0])
    assert 10 < claimed < len(clip_frames), line
    assert decoded_frames(out) == claimed, line
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == claimed
    # the per-face table is cut back to the video too: the same frames, face for face
    if table.suffix == ".csv":
        import csv

        with open(table, newline="") as f:
            rows = [(int(r["frame"]), json.loads(r["box"])) for r in csv.DictReader(f)]
    else:
        import pyarrow.parquet as pq

        rows = [(r["frame"], r["box"]) for r in pq.read_table(table).to_pylist()]
    assert rows == [(r["frame"], face["box"]) for r in lines for face in r["faces"]] and rows


# -- 9. stalled viewers and unfinished requests are disconnected -----------------------

def _sockets(pid: int) -> int:
    """Open sockets of a process (its fds that are sockets)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return count


@pytest.mark.slow  # a real server and 25 stalled clients
def test_stalled_viewers_and_unfinished_headers_are_disconnected(detector_models):
    if not Path("/proc/self/fd").exists():
        pytest.skip("counts the server's sockets in /proc (Linux)")
    server = Served("--source", SAMPLES / "people.mp4", "--loop", "--stall-timeout", "1")
    clients: list[socket.socket] = []
    try:
        server.wait_for(lambda: server.json("/api/sources")[0]["frames"] > 5, what="5 frames")
        before = _sockets(server.proc.pid)
        for _ in range(20):  # MJPEG viewers that never read
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"GET /api/sources/0/stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            clients.append(s)
        slow = []
        for _ in range(5):  # requests whose headers never finish
            s = socket.socket()
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"GET /api/sources HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(s)
        clients += slow
        server.wait_for(lambda: _sockets(server.proc.pid) >= before + 20, 20, "the connections to be accepted")
        # every one is closed by the server: its socket count goes back to what it was
        server.wait_for(lambda: _sockets(server.proc.pid) <= before, 90, "the stalled connections to be closed")
        for s in slow:  # and the client sees the end (a reset or an end of file)
            s.settimeout(5)
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert server.json("/api/sources/0")["viewers"]["video"] == 0
        assert "dropped a stalled video viewer" in "".join(server.stderr)
    finally:
        for s in clients:
            s.close()
        server.stop()


# -- 13. the smaller edges ---------------------------------------------------------------

@pytest.mark.slow  # a real server process
def test_serve_answers_at_its_own_loopback_address_and_quotes_an_odd_token(detector_models):
    from urllib.parse import parse_qs, urlsplit

    server = Served("--host", "127.0.0.2", "--source", SAMPLES / "people.mp4", "--loop")
    try:
        assert server.url.startswith("http://127.0.0.2:")
        assert server.request("/api/sources", host="127.0.0.2")[0] == 200
    finally:
        server.stop()
    token = "a+b&c#d;e f%20g,h"
    server = Served("--token", token, "--source", SAMPLES / "people.mp4", "--loop")
    try:
        parts = urlsplit(server.url)
        assert parse_qs(parts.query)["token"] == [token] and not parts.fragment, server.url
        status, headers, _ = server.request(f"/?{parts.query}")
        assert status == 200
        cookie = headers["set-cookie"].split(";")[0]
        assert server.request("/api/sources", {"Cookie": cookie})[0] == 200, cookie
        response = open_stream(server.port, "/api/sources/0/stream.mjpg", {"Cookie": cookie})
        assert response.status == 200 and read_jpegs(response, 1)
        response.close()
        assert server.request("/api/sources", {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        server.stop()


def test_a_bad_tiles_value_is_a_usage_error_before_any_work(tmp_path):
    proc = realtime("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", "--tiles", "foo")
    _, err = finish(proc, 60)
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--tiles" in errors[0] and "foo" in errors[0], err
    assert "detector:" not in err and "Traceback" not in err, err  # nothing was loaded


@pytest.mark.slow  # waits out a reconnect timeout
def test_a_stream_given_up_ends_the_run_on_time_and_non_zero(tmp_path, detector_models):
    import re

    server = FlakyServer(remux(SAMPLES / "people.mp4", tmp_path / "people.ts"), outage=10**6)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = realtime("run", "--source", f"http://127.0.0.1:{server.server_address[1]}/live.ts", "--no-show",
                        "--reconnect-timeout", "2")
        out, err = finish(proc, 120)
    finally:
        server.shutdown()
    assert proc.returncode == 1, err
    waited = float(re.search(r"gave up after ([\d.]+) s without frames", err).group(1))
    assert 2.0 <= waited < 2.6, err  # at the timeout, not at the next step of the backoff
    assert "frames in" in out and "Traceback" not in err  # the summary is still printed


@pytest.mark.slow  # a real process and a SIGKILL
def test_sigkill_before_the_first_fragment_leaves_no_empty_mp4(tmp_path, clip_frames, detector_models):
    clip = encode(tmp_path / "clip.mp4", clip_frames)
    out = tmp_path / "o.mp4"
    proc = realtime("annotate", clip, "-o", out)
    deadline = time.monotonic() + 120
    while not (out.exists() or list(tmp_path.glob(".o.*.partial.mp4"))):  # the video is open: its first frames are being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    assert not out.exists() or decoded_frames(out) > 0


def test_the_overlay_counts_one_face(tmp_path):
    from realtime.annotators import FpsAnnotator

    assert FpsAnnotator().text(1).endswith(" 1 face") and FpsAnnotator().text(2).endswith(" 2 faces")


# -- 10. signals --------------------------------------------------------------------------

def test_ctrl_c_while_a_stream_is_being_opened_is_prompt(tmp_path, detector_models):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts the connection, never answers
    try:
        proc = realtime("run", "--source", f"http://127.0.0.1:{silent.getsockname()[1]}/cam.ts", "--no-show")
        silent.settimeout(60)
        conn, _ = silent.accept()  # FFmpeg is connected and waits for an answer
        time.sleep(0.3)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = finish(proc, 30)
        took = time.monotonic() - start
        conn.close()
    finally:
        silent.close()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and took < 2.0, (took, err)


def test_the_program_ends_at_once_past_a_thread_stuck_in_native_code():
    """A thread that nothing can stop (FFmpeg waiting on a silent server) is abandoned: the
    program then ends with its exit code and its output flushed, without finalizing the
    interpreter (which such a thread crashed: -11 after "interrupted"); with none left,
    end_program returns and Python exits as usual."""
    import sys

    code = (
        "import sys, threading, time\n"
        "from realtime import signals\n"
        "signals.end_program(5)\n"  # nothing abandoned: returns
        "t = threading.Thread(target=time.sleep, args=(60,), daemon=True); t.start()\n"
        "signals.abandon(t)\n"
        "print('summary', end='')\n"
        "signals.end_program(7)\n"
        "sys.exit(1)\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 7 and proc.stdout == "summary" and time.monotonic() - start < 20, (proc.returncode, proc.stdout, proc.stderr)


def _annotating(tmp_path, clip):
    out, results = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    proc = realtime("annotate", clip, "-o", out, "--json", results)
    wait_for_lines(results, 30, proc)
    return proc, out, results


@pytest.fixture(scope="module")
def long_clip(clip_frames, tmp_path_factory):
    return encode(tmp_path_factory.mktemp("long") / "long.mp4", clip_frames * 2)  # 450 frames, 18 s


@pytest.mark.slow  # a real process on an 18 s clip
def test_sighup_finishes_the_outputs_like_sigterm(tmp_path, long_clip, detector_models):
    proc, out, results = _annotating(tmp_path, long_clip)
    proc.send_signal(signal.SIGHUP)
    stdout, err = finish(proc, 60)
    assert proc.returncode == 130, err
    assert "frames in" in stdout and "[interrupted]" in stdout and "Traceback" not in err, (stdout, err)
    assert 30 <= len(outputs_agree(out, results)) < 450


@pytest.mark.slow  # a real process on an 18 s clip
def test_a_storm_of_signals_keeps_the_summary_line(tmp_path, long_clip, detector_models):
    proc, out, results = _annotating(tmp_path, long_clip)
    storm = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]

    def send() -> None:
        k = 0
        while proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(storm[k % 3])
            k += 1
            time.sleep(0.001)

    sender = threading.Thread(target=send)
    sender.start()
    stdout, err = finish(proc, 60)
    sender.join()
    assert proc.returncode == 130, err
    assert "frames in" in stdout and "Traceback" not in err, (stdout, err)
    outputs_agree(out, results)


@pytest.mark.parametrize("after", [0.1, 0.2])
def test_ctrl_c_just_after_python_starts_is_quiet(tmp_path, after):
    """The handler is installed before anything heavy is imported (``import realtime``
    is light): a Ctrl-C ``after`` seconds past the interpreter's own start-up (measured
    here, as the machine's load makes it) is answered with one line. (Before Python
    runs the program's first line, its own default applies.)"""
    bare = python_start_seconds()
    proc = realtime("annotate", SAMPLES / "people.mp4", "-o", tmp_path / "o.mp4")
    time.sleep(bare + after)
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, 60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err and "interrupted" in err, err
