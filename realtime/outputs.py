"""Outputs never clobber inputs or each other.

Before any work, :func:`claim_outputs` compares every output path with every input and
every other output (:func:`engines.writes.check_distinct`: by device and inode and by
the resolved path, so a symlink, ``./x`` or a hard link is the same file), and locks each output so that a second run writing the same file stops with one line
instead of interleaving its bytes with the first's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from engines.writes import check_distinct, is_device
from realtime.errors import RealtimeError

try:  # POSIX; elsewhere outputs are checked but not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None



def _device(path: Path) -> bool:
    """/dev/null, /dev/stdout, a FIFO: nothing there to clobber or to lock."""
    return is_device(path)


class OutputLock(contextlib.AbstractContextManager):
    """Advisory locks (``flock``) on output files and folders, held for a run.

    A file output is locked through a hidden lock file beside it (``.NAME.lock``,
    removed on release), never through the output itself: a writer that replaces the
    output (a new file renamed over it) keeps it locked, and a run killed before its
    first frame leaves no empty output behind. A folder is locked itself (created if
    missing). An output the run created and left empty is removed on release. Locking
    never truncates: a file locked by another run is untouched.
    """

    def __init__(self, outputs: list[tuple[str, Path]]):
        self._held: list[tuple[int, Path, bool]] = []
        self._new = [path for what, path in outputs if what != "output folder" and not path.exists()]
        try:
            for what, path in outputs:
                self._lock(what, path)
        except BaseException:
            self.release()
            raise

    def _lock(self, what: str, path: Path) -> None:
        if fcntl is None or _device(path):
            return
        folder = what == "output folder"
        # hidden; a hidden output's lock keeps its one dot (``.NAME.TOKEN.partial.mp4.lock``
        # is one of its partial files to whoever cleans those up)
        target = path if folder else path.parent / f"{'' if path.name.startswith('.') else '.'}{path.name[:240]}.lock"
        created = not target.exists()
        try:
            if folder:
                path.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDONLY)
            else:
                fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RealtimeError(f"{what} {path}: cannot be written ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RealtimeError(f"{what} {path}: another realtime run is writing it; wait for it to end or choose another name") from None
        self._held.append((fd, target, created or not folder))

    def release(self) -> None:
        """Unlock; remove the lock files, and an output this run created and left empty."""
        for path in self._new:  # a run that ended before writing to it leaves nothing behind
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size == 0:
                    path.unlink()
        self._new = []
        while self._held:
            fd, path, created = self._held.pop()
            with contextlib.suppress(OSError):
                if created and path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
                elif created and path.is_file():
                    path.unlink()
            os.close(fd)

    def __exit__(self, *exc) -> None:
        self.release()


def claim_outputs(inputs: list[Path], outputs: list[tuple[str, Path]]) -> OutputLock:
    """:func:`check_distinct`, then lock every output (release the returned lock, or
    use it in ``with``, when the run ends)."""
    check_distinct(inputs, outputs)
    return OutputLock(outputs)
