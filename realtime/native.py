"""Keeping native libraries' console chatter off our stderr."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def quiet_native_stderr():
    """Send file descriptor 2 to /dev/null for the duration.

    MediaPipe (LiteRT) and OpenCV's video I/O print from C++ straight to fd 2 (dozens
    of INFO lines when a model loads, camera probing errors); our stderr carries the
    CLI's messages. Python exceptions are unaffected and still reach the caller."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (some embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
