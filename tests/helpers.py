"""Helpers the test files share (paths, the real media in ../shared, running the CLI,
checking its records); fixtures stay in the conftest files."""

from __future__ import annotations

import csv
import hashlib
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import av
import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families


ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
SAMPLES = ROOT / "samples"
FACE_KEYS = {"box", "score", "age_group", "age_probs", "gender", "gender_prob"}
MS = Fraction(1, 1000)
AGE_GROUPS = {"0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"}


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared data is not beside this checkout)")
    return path


def x264_settings(path: Path) -> bytes:
    """The options line libx264 writes into a video it encodes (an SEI in the first
    keyframe), e.g. ``b"x264 - core 165 ... threads=1 ... rc_lookahead=5 ..."``."""
    data = Path(path).read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\0", start)]


def onnx_of_another_shape(path: Path) -> Path:
    """A valid ONNX graph (ONNX Runtime and OpenVINO load it) whose input and outputs are
    not what its realtime metadata (the default ModelMeta: 112 px, 8 age groups) says:
    64 px crops, 3 age probabilities."""
    import onnx
    from onnx import TensorProto, helper

    from engines.meta import ModelMeta

    crops = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, 64, 64])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", k]) for n, k in (("age_probs", 3), ("gender_probs", 2))]
    years = helper.make_tensor_value_info("age_years", TensorProto.FLOAT, ["batch"])
    ints = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("zero", 0), ("two", 2), ("one", 1))]
    nodes = [helper.make_node("ReduceMean", ["crops"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("Identity", ["pooled"], ["age_probs"]),
             helper.make_node("Slice", ["pooled", "zero", "two", "one"], ["gender_probs"]),
             helper.make_node("ReduceMean", ["pooled"], ["age_years"], axes=[1], keepdims=0)]  # fmt: skip
    graph = helper.make_graph(nodes, "other", [crops], [*outs, years], initializer=ints)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    entry = proto.metadata_props.add()
    entry.key, entry.value = "realtime.meta", ModelMeta().to_json()
    onnx.save(proto, str(path))
    return path


def invoke(*args):
    """The `realtime` CLI in this process; an exception that is not an exit is raised."""
    from click.testing import CliRunner

    from realtime.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def check_record(record, frame):
    assert record["frame"] == frame and isinstance(record["time"], float)
    for face in record["faces"]:
        assert FACE_KEYS <= set(face)
        assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
        x1, y1, x2, y2 = face["box"]
        assert x2 > x1 and y2 > y1
        assert 0 <= face["score"] <= 1
        assert face["age_group"] in AGE_GROUPS
        assert len(face["age_probs"]) == 8 and abs(sum(face["age_probs"]) - 1) < 1e-3
        # the shown gender; with tracking its hysteresis may hold it a little below 0.5
        assert face["gender"] in ("female", "male") and 0.5 - 0.15 / 2 <= face["gender_prob"] <= 1


def remux(src: Path, dst: Path, **options) -> Path:
    """Copy a video's packets into another container (no re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def realtime(*args, **kw) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "realtime"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "realtime.cli"]
    return subprocess.Popen([*cmd, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}, **kw)


def python_start_seconds() -> float:
    """How long this machine takes, as loaded now, to start the interpreter and run
    nothing: before that a program cannot have installed any signal handler."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - start


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


class FlakyServer(http.server.ThreadingHTTPServer):
    """Serves one file; fails ``outage`` requests after the first, as a camera that
    drops off the network for a moment. As a live camera it sends no Content-Length
    (``length``: it does, as a file server)."""

    def __init__(self, path: Path, outage: int, length: bool = False):
        self.path, self.outage, self.requests = path, outage, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                self.requests += 1
                if 1 < self.requests <= 1 + self.outage:
                    handler.send_error(503, "camera offline")
                    return
                data = self.path.read_bytes()
                handler.send_response(200)
                handler.send_header("Content-Type", "video/mp2t")
                if length:
                    handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def tiny(data: Path, out: Path, **kw):
    """Smallest real run (a TrainSettings): MobileNetV3-small at 32 px, batch 8."""
    from train.trainer import TrainSettings

    base = dict(data=data, format="utkface", out=out, input_size=32, epochs=1, batch_size=8, folds=1, holdout=0.3, threads=1)
    return TrainSettings(**{**base, **kw})


def subset_set(src: Path, dst: Path, rows: list[dict]) -> None:
    """A CSV set at ``dst`` made of ``rows`` of ``src``'s labels.csv (files copied)."""
    import shutil

    (dst / "images").mkdir(parents=True)
    with open(dst / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            target = dst / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / row["file"], target)
            writer.writerow(row)


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def face_image(seed: int, size: int = 40) -> np.ndarray:
    """A small distinct BGR uint8 image (a blob on noise)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    cv2.circle(img, (size // 2, size // 2), size // 3, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return img


def outputs_agree(video: Path, results: Path) -> list[dict]:
    """The mp4 decodes, every JSONL line is complete, one per decoded frame."""
    text = results.read_text()
    assert text == "" or text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert decoded_frames(video) == len(records)
    return records


def encode(path: Path, frames: list[np.ndarray], times: list[float] | None = None, rotation: int = 0) -> Path:
    """Write BGR frames as H.264 with PyAV, at ``times`` (default 25 fps)."""
    times = times if times is not None else [i / 25 for i in range(len(frames))]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = MS
        if rotation:
            stream.set_display_rotation(rotation)
        for image, t in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = round(t * 1000), MS
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120, last_frame: bool = False) -> None:
    """Wait until ``path`` has ``n`` lines (or, ``last_frame``, a line for frame >= n)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        complete = [line for line in lines if line.endswith("}")]
        if (json.loads(complete[-1])["frame"] >= n if last_frame and complete else len(lines) >= n):
            return
        if proc.poll() is not None:
            pytest.fail(f"realtime ended early: {proc.communicate()[1]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{path} did not reach {n} lines in {timeout} s")


# -- `realtime serve` over HTTP on 127.0.0.1 ------------------------------------------

class Served:
    """A `realtime serve` process; its address is read from what it prints."""

    def __init__(self, *args: str, timeout: float = 180):
        self.proc = realtime("serve", "--port", "0", *args)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = ""
        for line in self.proc.stdout:
            self.stdout.append(line)
            if line.startswith("serving on "):
                self.url = line.split()[2]
                break
            if time.monotonic() > deadline:
                break
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout), daemon=True).start()
        if not self.url:
            self.stop()
            raise AssertionError(f"serve did not start: {''.join(self.stdout)}{''.join(self.stderr)}")
        parts = urlsplit(self.url)
        self.port = parts.port
        self.token = dict(p.split("=", 1) for p in parts.query.split("&") if p).get("token")

    @staticmethod
    def _drain(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def request(self, path: str, headers: dict | None = None, host: str = "127.0.0.1", timeout: float = 30):
        """(status, headers, body) of a GET on 127.0.0.1."""
        conn = http.client.HTTPConnection(host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, path: str, headers: dict | None = None):
        status, _, body = self.request(path, headers)
        assert status == 200, (path, status, body[:200])
        return json.loads(body)

    def metrics(self, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
        status, _, body = self.request("/metrics", headers)
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode()) for s in family.samples}

    def wait_for(self, condition, timeout: float = 60, what: str = "a condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; stderr: {''.join(self.stderr)[-2000:]}")

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def open_stream(port: int, path: str, headers: dict | None = None, timeout: float = 30) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def read_jpegs(response: http.client.HTTPResponse, n: int) -> list[bytes]:
    """The first ``n`` JPEG parts of a multipart/x-mixed-replace MJPEG stream."""
    boundary = re.search(r"boundary=(\S+)", response.getheader("Content-Type")).group(1).encode()
    parts = []
    while len(parts) < n:
        line = response.readline()
        assert line, "the stream ended"
        if line.strip() != b"--" + boundary:
            continue
        headers = {}
        while (line := response.readline().strip()):
            key, _, value = line.decode().partition(":")
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(response.read(int(headers["content-length"])))
    return parts


def run_cli(*args, timeout: float = 600, **kw) -> tuple[int, str, str]:
    """Run ``realtime ARGS`` to its end (names that are not UTF-8 pass through): code, stdout, stderr."""
    proc = realtime(*args, errors="surrogateescape", **kw)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err: str, message: str) -> None:
    """No traceback, and exactly one ``error:`` line, holding ``message``."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
