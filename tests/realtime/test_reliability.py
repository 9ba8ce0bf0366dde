"""Nothing lost, nothing overwritten, nothing silently wrong: real processes on small
clips made here (outputs onto inputs, two writers, SIGKILL, signal storms, a file size
limit, rotated, variable-rate, damaged and cut files, hostile models and options).
What is asserted is what a user would check: the input is byte-identical afterwards,
the mp4 decodes, the JSONL's lines parse and match the mp4's frames."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.helpers import SAMPLES
from tests.helpers import invoke
from tests.helpers import FlakyServer, decoded_frames, realtime, remux

pytestmark = pytest.mark.slow  # real processes, training or long media: not in the quick run

MS = Fraction(1, 1000)


def one_error_line(err: str, message: str) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


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


@pytest.fixture(scope="module")
def people_frames() -> list[np.ndarray]:
    with av.open(str(SAMPLES / "people.mp4")) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def long_clip(people_frames, tmp_path_factory) -> Path:
    """people.mp4 four times over: 300 frames, 12 s, long enough to be stopped midway."""
    frames = people_frames * 4
    return encode(tmp_path_factory.mktemp("long") / "long.mp4", frames)


@pytest.fixture
def warm_cache():
    """The default model's ONNX export in the tests' cache, so a run under a file size
    limit writes only its outputs."""
    from engines.resolve import onnx_for
    from engines.files import DEFAULT_WEIGHTS

    onnx_for(DEFAULT_WEIGHTS)


# -- 1. outputs never clobber inputs or each other -------------------------------------

def _collisions(t: Path):
    video, image, folder = t / "in.mp4", t / "in.jpg", t / "photos"
    return [
        ("-o is the input", ["annotate", video, "-o", video], "that is the input"),
        ("--json is the input", ["annotate", video, "-o", t / "o.mp4", "--json", video], "that is the input"),
        ("-o is --json", ["annotate", video, "-o", t / "o.mp4", "--json", t / "o.mp4"], "the same file as"),
        ("--summary is --json", ["annotate", video, "-o", t / "o.mp4", "--json", t / "r.json", "--summary", t / "r.json"], "the same file as"),
        ("-o is the input by another path", ["annotate", video, "-o", t / "link.mp4"], "that is the input"),
        ("-o is the image", ["annotate", image, "-o", t / "." / "in.jpg"], "that is the input"),
        ("a folder into itself", ["annotate", folder, "-o", folder], "that is the input"),
        ("--json onto a photo in the folder", ["annotate", folder, "-o", t / "out", "--json", folder / "a.jpg"], "that is the input"),
    ]


@pytest.mark.parametrize("case", range(8), ids=[c[0] for c in _collisions(Path("x"))])
def test_an_output_onto_an_input_or_another_output_is_refused(tmp_path, detector_models, case):
    (tmp_path / "in.mp4").write_bytes((SAMPLES / "people.mp4").read_bytes())
    (tmp_path / "in.jpg").write_bytes((SAMPLES / "people.jpg").read_bytes())
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes((SAMPLES / "people.jpg").read_bytes())
    (tmp_path / "link.mp4").symlink_to(tmp_path / "in.mp4")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    _, args, message = _collisions(tmp_path)[case]
    result = invoke(*args)
    assert result.exit_code == 1
    one_error_line(result.stderr, message)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched, nothing left


def test_two_runs_writing_the_same_outputs(tmp_path, long_clip, detector_models):
    out, results = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    first = realtime("annotate", long_clip, "-o", out, "--json", results)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = realtime("annotate", SAMPLES / "people.mp4", "-o", out, "--json", results)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1
    one_error_line(err, "another realtime run is writing it")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    records = outputs_agree(out, results)
    assert [r["frame"] for r in records] == list(range(300))


# -- 2. a video output plays whatever happens ------------------------------------------

def test_sigkill_leaves_a_playable_mp4_and_as_many_lines(tmp_path, long_clip, detector_models):
    out, results = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    proc = realtime("annotate", long_clip, "-o", out, "--json", results)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(results.read_text().splitlines() if results.exists() else []) < 50:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    records = outputs_agree(out, results)
    assert 50 <= len(records) < 300
    assert [r["frame"] for r in records] == list(range(len(records)))


def test_a_storm_of_signals_still_finishes_the_outputs(tmp_path, long_clip, detector_models):
    out, results = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    proc = realtime("annotate", long_clip, "-o", out, "--json", results)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.read_text()):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    for sig in [signal.SIGTERM] * 4 + [signal.SIGINT] * 4:
        proc.send_signal(sig)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    records = outputs_agree(out, results)
    assert 25 <= len(records) < 300


def test_a_full_disk_is_one_line_and_the_outputs_still_agree(tmp_path, long_clip, detector_models, warm_cache):
    out, results = tmp_path / "o.mp4", tmp_path / "o.jsonl"

    def limit_file_size():  # what a full disk does to a writer: its writes fail
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    proc = realtime("annotate", long_clip, "-o", out, "--json", results, preexec_fn=limit_file_size)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    one_error_line(err, f"cannot write {out}: File too large; it holds the first")
    records = outputs_agree(out, results)
    assert 25 <= len(records) < 300 and out.stat().st_size <= 400_000


@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs: a real full disk (ENOSPC). Needs the right to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the file size limit test covers write errors")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_really_full_disk(small_disk, long_clip, detector_models, warm_cache):
    out, results = small_disk / "o.mp4", small_disk / "o.jsonl"
    proc = realtime("annotate", long_clip, "-o", out, "--json", results)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    # whichever file the disk filled up on (the mp4 or the JSONL), the two agree
    one_error_line(err, ": No space left on device; it")
    records = outputs_agree(out, results)
    assert 25 <= len(records) < 300


# -- 3. faithful to the source ---------------------------------------------------------

def test_a_rotated_phone_clip_is_analysed_upright_and_keeps_its_rotation(tmp_path, people_frames, detector_models):
    upright = encode(tmp_path / "upright.mp4", people_frames[:10])
    # stored turned a quarter clockwise, as a phone held upright records it
    rotated = encode(tmp_path / "rotated.mp4", [np.ascontiguousarray(np.rot90(f, -1)) for f in people_frames[:10]], rotation=90)
    runs = {}
    for clip in (upright, rotated):
        result = invoke("annotate", clip, "-o", tmp_path / f"o_{clip.name}", "--json", tmp_path / f"{clip.stem}.jsonl", "--no-track")
        assert result.exit_code == 0, result.stderr
        runs[clip.stem] = [json.loads(line) for line in (tmp_path / f"{clip.stem}.jsonl").read_text().splitlines()]
    found = {k: sum(len(r["faces"]) for r in v) for k, v in runs.items()}
    assert found["rotated"] >= 15 and found["rotated"] >= found["upright"] - 3  # both faces, in most frames
    for a, b in zip(runs["upright"], runs["rotated"]):
        best = [max(r["faces"], key=lambda f: f["score"])["box"] for r in (a, b)]
        assert np.abs(np.subtract(*best)).max() <= 4  # the same face, in upright coordinates (x up to 640)
    with av.open(str(tmp_path / "o_rotated.mp4")) as c:
        frame = next(c.decode(video=0))
        assert frame.rotation == 90 and (frame.width, frame.height) == (360, 640)


def test_variable_frame_rate_is_kept(tmp_path, people_frames, detector_models):
    times = [0.0, 0.04, 0.08, 0.3, 0.34, 0.9, 0.94, 0.98, 1.5, 1.54, 1.58, 1.62, 2.5, 2.54, 2.58, 2.62]
    clip = encode(tmp_path / "vfr.mp4", people_frames[: len(times)], times)
    result = invoke("annotate", clip, "-o", tmp_path / "o.mp4", "--json", tmp_path / "o.jsonl", "--no-track")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(times)))
    assert [r["time"] for r in records] == pytest.approx(times, abs=1e-3)
    with av.open(str(tmp_path / "o.mp4")) as c:
        written = [f.time for f in c.decode(video=0)]
    # fragmented MP4 has no edit list: the encoder's B-frame delay shifts the start, never the spacing
    assert np.diff(written) == pytest.approx(np.diff(times), abs=1e-3)


def test_a_cut_mkv_is_reported_in_one_line(tmp_path, detector_models):
    mkv = remux(SAMPLES / "people.mp4", tmp_path / "people.mkv")
    data = mkv.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    result = invoke("annotate", cut, "-o", tmp_path / "o.mp4", "--json", tmp_path / "o.jsonl")
    assert result.exit_code == 0, result.stderr
    report = [line for line in result.stderr.splitlines() if "the rest is unreadable" in line]
    assert len(report) == 1 and "cut.mkv" in report[0] and "of 3.0 s" in report[0], result.stderr
    records = outputs_agree(tmp_path / "o.mp4", tmp_path / "o.jsonl")
    assert 30 <= len(records) < 75


def test_frames_after_damage_keep_their_source_index_and_time(tmp_path, detector_models):
    mkv = remux(SAMPLES / "people.mp4", tmp_path / "people.mkv")
    data = bytearray(mkv.read_bytes())
    at = int(len(data) * 0.4)
    data[at: at + 3000] = bytes(3000)  # a burst of zeros in the middle
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    result = invoke("annotate", damaged, "-o", tmp_path / "o.mp4", "--json", tmp_path / "o.jsonl")
    assert result.exit_code == 0, result.stderr
    assert len([line for line in result.stderr.splitlines() if "damaged.mkv:" in line]) == 1, result.stderr
    records = outputs_agree(tmp_path / "o.mp4", tmp_path / "o.jsonl")
    frames = [r["frame"] for r in records]
    assert frames != list(range(len(frames)))  # frames were lost: the numbering shows the gap
    assert all(r["time"] == pytest.approx(r["frame"] / 25, abs=1e-3) for r in records)


# -- 4. folders of photos are photos ---------------------------------------------------

def test_a_folder_of_photos_is_not_tracked_unless_asked(tmp_path, detector_models):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (photos / name).write_bytes((SAMPLES / "people.jpg").read_bytes())
    result = invoke("annotate", photos, "-o", tmp_path / "out", "--json", tmp_path / "p.jsonl", "--summary", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all("track_id" not in face for r in records for face in r["faces"]) and "people" not in result.stdout
    assert not (tmp_path / "s.json").exists()
    assert records[0]["faces"] == records[1]["faces"] == records[2]["faces"]  # each photo on its own: same answer
    result = invoke("annotate", photos, "-o", tmp_path / "out2", "--json", tmp_path / "t.jsonl", "--track")
    assert result.exit_code == 0, result.stderr
    assert all("track_id" in face for line in (tmp_path / "t.jsonl").read_text().splitlines() for face in json.loads(line)["faces"])


# -- 5. model files and options are validated ------------------------------------------

def _checkpoint_with_meta(path: Path, **changes) -> Path:
    from safetensors.numpy import save_file

    from engines.meta import ModelMeta

    meta = json.loads(ModelMeta().to_json())
    meta.update(changes)
    save_file({"w": np.zeros(1, np.float32)}, str(path), metadata={"realtime.meta": json.dumps(meta)})
    return path


HOSTILE_META = [
    ("input size 0", dict(input_size=0), "input_size = 0"),
    ("input size huge", dict(input_size=10**9), "input_size = 1000000000"),
    ("std 0", dict(std=[0, 0, 0]), "std = [0, 0, 0]"),
    ("version as a string", dict(format_version="1"), 'format_version = "1"'),
    ("NaN mean", dict(mean=[float("nan"), 0.4, 0.4]), "mean = [NaN, 0.4, 0.4]"),
    ("labels not a list", dict(age_labels="0-100"), 'age_labels = "0-100"'),
]


@pytest.mark.parametrize("changes, message", [h[1:] for h in HOSTILE_META], ids=[h[0] for h in HOSTILE_META])
def test_hostile_model_metadata_is_one_line(tmp_path, detector_models, changes, message):
    model = _checkpoint_with_meta(tmp_path / "m.safetensors", **changes)
    result = invoke("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", "--model", model)
    assert result.exit_code == 1
    one_error_line(result.stderr, f"bad model metadata: {message}")
    assert not (tmp_path / "o.jpg").exists()


def test_an_onnx_file_of_another_shape_fails_at_load(tmp_path, detector_models):
    from tests.helpers import onnx_of_another_shape

    onnx_of_another_shape(tmp_path / "other.onnx")
    result = invoke("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", "--model", tmp_path / "other.onnx")
    assert result.exit_code == 1
    one_error_line(result.stderr, "its graph does not match its metadata (input should be (N, 3, 112, 112)")


@pytest.mark.parametrize("option", ["--smoothing", "--hysteresis", "--min-score", "--crop-scale"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_options_refuse_nan_and_inf(tmp_path, option, value):
    result = invoke("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", option, value)
    assert result.exit_code == 2
    one_error_line(result.stderr, option)


# -- 7. clean edges --------------------------------------------------------------------

@pytest.mark.parametrize("delay", [0.2, 0.6, 1.2])
def test_ctrl_c_during_start_up_is_quiet(tmp_path, delay, long_clip):
    # a clip long enough that the signal lands before the run ends, however fast it starts
    proc = realtime("annotate", long_clip, "-o", tmp_path / "o.mp4")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err and "interrupted" in err, err
    assert not (tmp_path / "o.mp4").exists() or decoded_frames(tmp_path / "o.mp4") >= 0


def test_a_cut_jpeg_is_named_once(tmp_path, detector_models):
    cut = tmp_path / "cut.jpg"
    data = (SAMPLES / "people.jpg").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    proc = realtime("annotate", cut, "-o", tmp_path / "o.jpg")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Premature end" not in err and "Corrupt JPEG" not in err
    assert len([line for line in err.splitlines() if "cut.jpg" in line and "cut short" in line]) == 1, err


def test_ctrl_c_while_a_stream_reconnects_is_prompt(tmp_path, detector_models):
    server = FlakyServer(remux(SAMPLES / "people.mp4", tmp_path / "people.ts"), outage=10**6)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = realtime("run", "--source", f"http://127.0.0.1:{server.server_address[1]}/live.ts", "--no-show",
                        "--json", tmp_path / "live.jsonl")
        deadline = time.monotonic() + 120
        while server.requests < 3 and time.monotonic() < deadline:  # the stream ended; it is retrying
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        time.sleep(0.3)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - start
    finally:
        server.shutdown()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and took < 3.0, (took, err)


def test_a_stream_that_never_answers_says_so(tmp_path, detector_models):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections, never says a word
    try:
        port = silent.getsockname()[1]
        proc = realtime("run", "--source", f"http://127.0.0.1:{port}/cam.ts", "--no-show", "--reconnect-timeout", "0")
        _, err = proc.communicate(timeout=120)
    finally:
        silent.close()
    assert proc.returncode == 1
    one_error_line(err, f"cannot open http://127.0.0.1:{port}/cam.ts: no answer within 10 s")
    assert "Immediate exit requested" not in err
