"""Issue 18, part A, on the app's side: no command overwrites an input (also through
links), odd file names and odd files, NaN models, one line instead of a traceback.
Real processes on real files; what is asserted is what a user would check (the input's
bytes afterwards, one error line, the exit status)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import digest, one_line, run_cli as run, SAMPLES, realtime


pytestmark = pytest.mark.slow  # real processes: not in the quick run


def photos(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLES / "people.jpg", folder / name)
    return folder


# ----------------------------------------------------------------- 1: links in folders
def _hard_link(t: Path):
    photos(t / "in", "a.jpg", "b.jpg")
    (t / "out").mkdir()
    os.link(t / "in" / "a.jpg", t / "out" / "a.jpg")
    return t / "in", t / "out"


def _symlink(t: Path):
    photos(t / "in", "a.jpg", "b.jpg")
    (t / "out").mkdir()
    (t / "out" / "b.jpg").symlink_to(Path("..") / "in" / "b.jpg")
    return t / "in", t / "out"


def _folder_of_symlinks(t: Path):
    photos(t / "real", "a.jpg", "b.jpg")
    (t / "in").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (t / "in" / name).symlink_to(t / "real" / name)
    return t / "in", t / "real"


@pytest.mark.parametrize("layout", [_hard_link, _symlink, _folder_of_symlinks])
def test_a_folder_run_never_writes_through_a_link_onto_an_input(tmp_path, layout):
    source, out = layout(tmp_path)
    before = {p: digest(p) for p in source.iterdir()}
    code, _, err = run("annotate", source, "-o", out)
    assert code == 1
    one_line(err, "that is the input")
    assert {p: digest(p) for p in source.iterdir()} == before


def test_an_image_output_replaces_a_link_instead_of_writing_through_it(tmp_path, detector_models):
    """A link in the output folder to a file that is no input: the new image replaces
    the link; the file it pointed to is untouched."""
    source = photos(tmp_path / "in", "a.jpg")
    elsewhere = photos(tmp_path / "elsewhere", "keep.jpg") / "keep.jpg"
    before = digest(elsewhere)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.jpg").symlink_to(elsewhere)
    code, _, err = run("annotate", source, "-o", tmp_path / "out")
    assert code == 0, err
    assert digest(elsewhere) == before
    assert not (tmp_path / "out" / "a.jpg").is_symlink()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "a.jpg"]  # no temporary file left


# ------------------------------------------------ 3, 8, 13: odd names, odd files, big images
def test_a_name_that_is_not_utf8_is_read_alone_and_in_a_folder(tmp_path, detector_models):
    bad = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, not UTF-8
    folder = photos(tmp_path / "in", "ok.jpg")
    shutil.copy(SAMPLES / "people.jpg", folder / bad)
    out = tmp_path / os.fsdecode(b"out\xff.jpg")
    code, _, err = run("annotate", folder / bad, "-o", out, "--json", tmp_path / "one.jsonl")
    assert code == 0, err
    assert out.stat().st_size > 0 and json.loads((tmp_path / "one.jsonl").read_text())["faces"]
    code, _, err = run("annotate", folder, "-o", tmp_path / "out", "--json", tmp_path / "all.jsonl")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(folder))
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 2
    video = tmp_path / os.fsdecode(b"clip\xff.mp4")
    shutil.copy(SAMPLES / "people.mp4", video)
    code, _, err = run("annotate", video, "-o", tmp_path / os.fsdecode(b"v\xff.mp4"))
    assert code == 0, err


def test_a_fifo_in_a_folder_is_skipped_and_alone_is_one_line(tmp_path, detector_models):
    folder = photos(tmp_path / "in", "a.jpg")
    os.mkfifo(folder / "b.jpg")
    code, _, err = run("annotate", folder, "-o", tmp_path / "out", timeout=120)
    assert code == 0, err
    assert "skipping" in err and "b.jpg: not a regular file" in err
    assert os.listdir(tmp_path / "out") == ["a.jpg"]
    os.mkfifo(tmp_path / "c.mp4")
    for name in ("b.jpg", "c.mp4"):
        path = folder / name if name == "b.jpg" else tmp_path / name
        code, _, err = run("annotate", path, "-o", tmp_path / f"o{Path(name).suffix}", timeout=120)
        assert code == 1
        one_line(err, "not a regular file")


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, detector_models):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (9000, 9000)).save(big)  # 81 Mpx in a few hundred kB
    code, _, err = run("annotate", big, "-o", tmp_path / "o.jpg")
    assert code == 1
    one_line(err, "9000x9000 is over the limit of 50 Mpx")
    folder = photos(tmp_path / "in", "a.jpg")
    shutil.copy(big, folder / "big.png")
    code, _, err = run("annotate", folder, "-o", tmp_path / "out", "--max-pixels", "100000000")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["a.jpg", "big.png"]
    code, _, err = run("annotate", folder, "-o", tmp_path / "out2")
    assert code == 0 and "skipping" in err and "over the limit" in err
    assert os.listdir(tmp_path / "out2") == ["a.jpg"]


def test_an_avif_photo_is_a_photo(tmp_path, detector_models):
    from PIL import Image, features

    if not features.check("avif"):
        pytest.skip("this Pillow cannot write AVIF")
    Image.open(SAMPLES / "people.jpg").save(tmp_path / "p.avif")
    code, _, err = run("annotate", tmp_path / "p.avif", "-o", tmp_path / "o.jpg", "--json", tmp_path / "o.jsonl")
    assert code == 0, err
    record = json.loads((tmp_path / "o.jsonl").read_text())
    assert record["file"] == "p.avif" and record["faces"]
    (tmp_path / "p.heic").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    code, _, err = run("annotate", tmp_path / "p.heic", "-o", tmp_path / "h.jpg")
    assert code == 1
    one_line(err, "not a readable image")


# ---------------------------------------------------------- 12, 13: one line, summaries
def test_names_over_255_bytes_are_one_line(tmp_path):
    long = "a" * 300
    for args in (["annotate", tmp_path / f"{long}.jpg", "-o", tmp_path / "o.jpg"],
                 ["annotate", SAMPLES / "people.jpg", "-o", tmp_path / f"{long}.jpg"],
                 ["annotate", SAMPLES / "people.mp4", "-o", tmp_path / "o.mp4", "--json", tmp_path / f"{long}.jsonl"],
                 ["run", "--source", tmp_path / f"{long}.mp4", "--no-show"],
                 ["bench", SAMPLES / "people.mp4", "--json", tmp_path / f"{long}.json"]):
        code, _, err = run(*args)
        assert code == 1, err
        one_line(err, "name too long")


def test_bench_json_to_a_full_device_is_one_line(detector_models):
    code, out, err = run("bench", SAMPLES / "people.mp4", "--frames", "3", "--batches", "1", "--classifier-seconds", "0.1",
                         "--classifier-backend", "onnxruntime", "--json", "/dev/full")
    assert code == 1 and "crops/s" in out
    one_line(err, "--json /dev/full: cannot be written (No space left on device)")


def test_sheet_never_writes_onto_its_input(tmp_path):
    photo = photos(tmp_path, "p.jpg") / "p.jpg"
    before = digest(photo)
    os.link(photo, tmp_path / "sheet.jpg")
    code, _, err = run("sheet", photo, "-o", tmp_path / "sheet.jpg")
    assert code == 1
    one_line(err, "that is the input")
    assert digest(photo) == before


def test_a_summary_that_does_not_apply_says_so(tmp_path, detector_models):
    for args in (["annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg"],
                 ["annotate", photos(tmp_path / "in", "a.jpg"), "-o", tmp_path / "out"],
                 ["annotate", SAMPLES / "people.mp4", "-o", tmp_path / "o.mp4", "--no-track"]):
        code, _, err = run(*args, "--summary", tmp_path / "s.json")
        assert code == 0, err
        assert "--summary" in err and "not written" in err
        assert not (tmp_path / "s.json").exists()


def test_sigkill_never_leaves_an_empty_summary(tmp_path, detector_models):
    results, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    proc = realtime("annotate", SAMPLES / "people.mp4", "-o", tmp_path / "o.mp4", "--json", results, "--summary", summary)
    deadline = time.monotonic() + 120
    while not results.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the outputs are claimed: the run is under way
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not summary.exists()  # no summary rather than an empty one
    code, _, err = run("annotate", SAMPLES / "people.mp4", "-o", tmp_path / "o.mp4", "--json", results, "--summary", summary)
    assert code == 0, err
    assert json.loads(summary.read_text())["frames"] == 75
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("megabytes", [250, 400])
def test_too_little_memory_is_one_line(tmp_path, megabytes):
    import resource

    def limit():  # `ulimit -v`: the libraries cannot even be mapped
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

    code, _, err = run("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", preexec_fn=limit)
    assert code == 1, err
    one_line(err, "error:")
    assert "out of memory" in err or "cannot start a thread" in err or "no backend could load" in err, err
