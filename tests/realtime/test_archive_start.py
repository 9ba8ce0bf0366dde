"""`realtime archive` when its local Ray cannot start: a real failure of Ray's (its GCS
cannot bind the port it is given, held by this test on 127.0.0.1) is one line, exit 1,
no traceback, and every process Ray started for it is gone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT, SAMPLES, one_line


def marked(mark: str) -> list[str]:
    """The command lines of the live processes whose environment holds ``mark``
    (every process the CLI started, and theirs, inherit it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone, or not ours to read
            continue
    return found


@pytest.mark.slow
def test_ray_that_fails_to_start_is_one_line_exit_1_and_leaves_no_process(detector_models, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    mark = f"REALTIME_TEST_MARK={uuid.uuid4().hex}"
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's files, a short path (Unix sockets: ~100 bytes)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": temp, "RAY_GCS_SERVER_PORT": str(port),
               mark.split("=")[0]: mark.split("=")[1]}
        probe = subprocess.Popen(["sleep", "60"], env=env)  # the search finds a marked process
        try:
            for _ in range(50):  # until it has exec'd (bounded: 5 s)
                if any(cmd.startswith("sleep 60") for cmd in marked(mark)):
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the process search does not find a marked process")
        finally:
            probe.kill()
            probe.wait()
        try:
            done = subprocess.run([sys.executable, "-m", "realtime.cli", "archive", str(SAMPLES / "people.mp4"),
                                   "--out", str(tmp_path / "out"), "--workers", "1"],
                                  capture_output=True, text=True, env=env, timeout=300)
            left = marked(mark)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 1, done.stderr
    one_line(done.stderr, "cannot start Ray: Failed to start GCS. (details: ")
    assert "gcs_server.out" in done.stderr
    assert left == []
    assert not list((tmp_path / "out").rglob("*.parquet"))
