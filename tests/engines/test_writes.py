"""engines.writes.write_atomic, the one way a whole file is written from memory: a
full disk or a refused write is one RealtimeError, the old file stays as it was and
no temporary file is left (the archive's manifest goes the same way)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engines.errors import RealtimeError
from engines.writes import write_atomic
from tests.helpers import ROOT

#: in a child process, once its imports are done: files may grow to 4 kB (a real
#: EFBIG from the kernel, no signal; no bytecode written, which would be cut short too)
FULL_DISK = """
import resource, signal, sys
from engines.errors import RealtimeError
{imports}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    {call}
except RealtimeError as e:
    print(e)
    sys.exit(1)
"""


def in_a_full_disk(imports: str, call: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FULL_DISK.format(imports=imports, call=call)], cwd=cwd,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})


def test_a_whole_file_replaces_the_old_one(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    assert write_atomic(path, "new é", "--json") == path
    assert path.read_text(encoding="utf-8") == "new é" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_full_disk_is_one_line_and_leaves_the_old_file(tmp_path):
    (tmp_path / "out.json").write_text("old")
    done = in_a_full_disk("from engines.writes import write_atomic", "write_atomic('out.json', b'x' * 100_000, '--json')", tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == "--json out.json: cannot be written (File too large)" and not done.stderr
    assert (tmp_path / "out.json").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_folder_that_cannot_hold_it_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RealtimeError, match=r"^--summary .*/file/s.json: cannot be written \(Not a directory\)$"):
        write_atomic(tmp_path / "file" / "s.json", "{}", "--summary")


def test_the_archive_manifest_on_a_full_disk_is_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    rows = "{str(k): {'key': str(k), 'path': 'x' * 200} for k in range(200)}"
    imports = "import pathlib, pyarrow.parquet; from realtime.archive.results import Layout, write_manifest"
    done = in_a_full_disk(imports, f"write_manifest(Layout(pathlib.Path('.')), {rows})", tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == "archive manifest manifest.parquet: cannot be written (File too large)", done.stdout
    assert list(tmp_path.iterdir()) == []
