"""Where realtime keeps files it makes: the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$REALTIME_CACHE``, else ``$XDG_CACHE_HOME/realtime``, else ``~/.cache/realtime``.

    The returned directory (joined with ``parts``) is created if missing.
    """
    base = os.environ.get("REALTIME_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "realtime")
    path = Path(base).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
