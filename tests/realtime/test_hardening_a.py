"""Issue 18, part A, on the app's side: no command overwrites an input (also through
links), odd file names and odd files, NaN models, one line instead of a traceback.
Real processes on real files; what is asserted is what a user would check (the input's
bytes afterwards, one error line, the exit status)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.realtime.test_faults import realtime


def run(*args, timeout: float = 300, **kw):
    proc = realtime(*args, **kw)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err: str, message: str) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
