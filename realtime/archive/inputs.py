"""What ``realtime archive`` reads: INPUT arguments expanded to video files, each with a
stable key and a fingerprint.

An INPUT is a file, a folder (searched recursively for videos), a glob (``**`` spans
folders) or ``@list.txt`` (one INPUT a line; blank lines and ``#`` comments skipped).
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from realtime.errors import RealtimeError

#: suffixes a folder is searched for (a file named on the command line is taken whatever its suffix)
VIDEO_FILE_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts",
                                 ".wmv", ".flv", ".3gp"})

_GLOB = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Input:
    """One video to archive.

    Attributes:
        path: absolute path (as the workers must see it too).
        key: stable name of its results: the file's stem and a short hash of its path.
        size: bytes; mtime_ns: modification time (ns): with the settings, its fingerprint.
    """

    path: Path
    key: str
    size: int
    mtime_ns: int


def source_key(path: Path) -> str:
    """``STEM-HASH``: readable, and distinct for two files of one name in different folders."""
    stem = _UNSAFE.sub("_", path.stem).strip("._")[:60] or "video"
    return f"{stem}-{hashlib.sha1(str(path).encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def _list_file(spec: str, depth: int) -> list[str]:
    path = Path(spec[1:])
    if depth > 4:
        raise RealtimeError(f"{spec}: lists nest more than 4 deep")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RealtimeError(f"input list {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _expand(spec: str, depth: int = 0) -> list[Path]:
    if spec.startswith("@"):
        return [p for line in _list_file(spec, depth) for p in _expand(line, depth + 1)]
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_FILE_SUFFIXES and p.is_file())
        if not found:
            raise RealtimeError(f"{spec}: folder holds no videos ({', '.join(sorted(VIDEO_FILE_SUFFIXES))})")
        return found
    if path.is_file():
        return [path]
    if path.exists():
        raise RealtimeError(f"input {spec}: not a file or folder")
    if _GLOB.search(spec):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise RealtimeError(f"{spec}: matches no files")
        return found
    raise RealtimeError(f"input not found: {spec}")


def expand_inputs(specs: list[str] | tuple[str, ...]) -> list[Input]:
    """Every INPUT as :class:`Input`, in order, each file once."""
    if not specs:
        raise RealtimeError("no INPUT given: name video files, folders, globs or @list.txt")
    seen: dict[Path, Input] = {}
    for spec in specs:
        for path in _expand(str(spec)):
            path = path.resolve()
            if path in seen:
                continue
            try:
                st = path.stat()
            except OSError as e:
                raise RealtimeError(f"input {path}: {e.strerror}") from None
            seen[path] = Input(path, source_key(path), st.st_size, st.st_mtime_ns)
    return list(seen.values())
