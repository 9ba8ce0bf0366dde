"""Writing files without ever touching an input: the checks and the one way to write.

Every command that writes (annotate, run, eval, train, convert, ensemble, sheet, bench)
goes through here:

- :func:`check_distinct` before any work: no output is one of the inputs, or another
  output, by identity (device and inode, through hard and symbolic links) and by the
  resolved path (for outputs that do not exist yet).
- :func:`check_writable`: the folder exists, the name fits the file system, it can be
  written, the suffix is one the writer makes.
- :func:`atomic_path` / :func:`write_atomic`: a new file under a temporary name in the
  output's folder, renamed over the output when complete, so a write never goes
  *through* an existing link (a hard link or symlink in an output folder is replaced,
  not written into) and a failed or killed write leaves the old file or nothing, never
  half a file (a rename survives the process being killed; no fsync: a power cut
  may still lose the newest file). Devices (``/dev/null``, ``/dev/full``, a FIFO) are written directly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from engines.errors import RealtimeError

#: Longest file name and path most file systems take (bytes).
NAME_MAX, PATH_MAX = 255, 4096


def is_device(path: Path) -> bool:
    """True for an existing path that is neither a regular file nor a folder (a device,
    a FIFO, a socket): nothing there to clobber, and nothing to rename over."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_name(path: Path, what: str) -> None:
    """Fail with one line when a component of ``path`` is longer than the file system takes."""
    raw = os.fsencode(str(path))
    long = next((part for part in raw.split(b"/") if len(part) > NAME_MAX), None)
    if long is not None or len(raw) > PATH_MAX:
        shown = os.fsdecode(long or raw)
        raise RealtimeError(f"{what} {shown[:40]}...: name too long ({len(long or raw)} bytes; at most {NAME_MAX} a name, {PATH_MAX} a path)")


def _keys(path: Path, follow: bool = True) -> set:
    """What identifies ``path``: its (device, inode) if it exists, and its resolved path."""
    keys = set()
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(path) if follow else os.lstat(path)
        keys.add(("inode", st.st_dev, st.st_ino))
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        keys.add(("path", os.path.realpath(path)))
    return keys


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file or folder (through links; existing or not)."""
    return bool(_keys(Path(a)) & _keys(Path(b)))


def check_distinct(inputs: Iterable[Path], outputs: list[tuple[str, Path]]) -> None:
    """Fail with one line when an output (``(what, path)``, e.g. ``("--json", p)``) is
    one of the ``inputs`` (every file a run reads, and a folder it reads from) or
    another output. Devices are left out (``/dev/null`` twice is fine). Linear in the
    number of files: each is identified once."""
    seen: dict = {}
    for source in inputs:
        for key in _keys(Path(source)):
            seen.setdefault(key, ("input", Path(source)))
    for what, path in outputs:
        path = Path(path)
        if is_device(path):
            continue
        keys = _keys(path)
        hit = next((seen[k] for k in keys if k in seen), None)
        if hit is not None and hit[0] == "input":
            raise RealtimeError(f"{what} {path}: that is the input {hit[1]}; it would be overwritten (choose another name)")
        if hit is not None:
            raise RealtimeError(f"{what} {path}: the same file as {hit[0]} {hit[1]}; give each output its own name")
        for key in keys:
            seen[key] = (what, path)


def check_writable(path: Path, suffixes: Iterable[str] | None = None, what: str = "output") -> Path:
    """Fail early, before any work, if ``path`` cannot be written (or has a wrong suffix)."""
    path = Path(path)
    check_name(path, what)
    if is_device(path):
        return path
    suffixes = None if suffixes is None else frozenset(suffixes)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise RealtimeError(f"{what} {path}: use one of {', '.join(sorted(suffixes))}")
    parent = path.parent if path.parent != Path("") else Path(".")
    if not parent.is_dir():
        raise RealtimeError(f"{what} {path}: folder {parent} does not exist")
    if path.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise RealtimeError(f"{what} {path}: cannot be written")
    return path


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or (str(e).splitlines() or [""])[0]
    return text or type(e).__name__


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str = "output") -> Iterator[Path]:
    """A temporary name in ``path``'s folder for a writer that needs a file name; when
    the block ends without an error it is renamed over ``path`` (which is replaced, never
    written through: a link there is replaced by the new file). On an error the
    temporary file is removed and an OSError (full disk, EFBIG...) becomes one
    RealtimeError. A device ``path`` is yielded as it is."""
    path = Path(path)
    if is_device(path):
        try:
            yield path
        except OSError as e:
            raise RealtimeError(f"{what} {path}: cannot be written ({_reason(e)})") from None
        return
    check_name(path, what)
    try:
        hidden = "" if path.name.startswith(".") else "."  # a hidden name's temporary keeps its one dot (globs find both)
        fd, name = tempfile.mkstemp(prefix=f"{hidden}{path.name[:200]}.", suffix=".partial" + path.suffix, dir=path.parent or ".")
    except OSError as e:
        raise RealtimeError(f"{what} {path}: cannot be written ({_reason(e)})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plain open() would have made it
        os.replace(tmp, path)
    except OSError as e:
        raise RealtimeError(f"{what} {path}: cannot be written ({_reason(e)})") from None
    except Exception as e:  # a writer's own error type for the same causes (safetensors, onnx)
        if isinstance(e, RealtimeError):
            raise
        if _disk_error(e):
            raise RealtimeError(f"{what} {path}: cannot be written ({_reason(e)})") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _disk_error(e: BaseException) -> bool:
    """A library's wrapped OSError (e.g. safetensors' "No space left on device")."""
    text = str(e)
    return any(os.strerror(code) in text for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES))


def write_atomic(path: str | Path, data: bytes | str, what: str = "output") -> Path:
    """Write ``data`` (str: UTF-8; a file name that was not UTF-8 goes back as its own
    bytes) as the whole new content of ``path``, on disk before the rename (see
    :func:`atomic_path`: complete or not at all; a full disk or a refused write is one
    RealtimeError naming ``what``, and no temporary file is left). The one way the
    project writes a whole file from memory."""
    data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def check_outputs(inputs: Iterable[Path | None], outputs: list[tuple[str, Path | None]]) -> None:
    """The checks every writing command makes before any work: each output (``(what,
    path)``; None or ``"-"``: not written) can be written, and none is an input or
    another output (:func:`check_distinct`)."""
    outs = [(what, Path(path)) for what, path in outputs if path is not None and str(path) != "-"]
    for what, path in outs:
        check_writable(path, None, what)
    check_distinct([Path(p) for p in inputs if p is not None], outs)


def finite(value):
    """``value`` with every non-finite float (NaN, inf) made None, numpy made Python,
    so ``json.dumps(..., allow_nan=False)`` never meets a number JSON does not have."""
    import math

    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value, **kw) -> str:
    """Strict JSON of ``value`` (non-finite numbers written as null, see :func:`finite`)."""
    import json

    return json.dumps(finite(value), allow_nan=False, **kw)
