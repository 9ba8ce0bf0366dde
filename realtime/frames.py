"""What every source yields and is: :class:`Frame` (one decoded frame) and the
:class:`Source` base class (an iterable of frames that is closed when done)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        image: (H, W, 3) uint8, BGR.
        index: 0-based position in the source.
        time: seconds from the start of the source (stream time for files, wall
            clock for live sources, 0 for still images).
        name: file name for image and folder sources, else "".
        rotation: degrees the source's display matrix turned ``image`` (counter-
            clockwise) to make it upright; a video output turns it back and keeps the
            matrix, so it shows as the source did.
    """

    image: np.ndarray
    index: int
    time: float
    name: str = ""
    rotation: int = 0


class Source(ABC):
    """An open source of frames; iterate it, then close it (or use ``with``).

    Attributes:
        name: what to show the user (credentials masked).
        kind: "camera", "video", "stream", "image" or "folder".
        live: True when frames arrive in real time (camera, stream).
        fps: frames per second if known (video, camera, stream), else None.
        size: (width, height) if known before the first frame, else None.
        frame_count: number of frames if known, else None.
        paths: the local files (and folder) it reads, which no output may overwrite.
    """

    kind: str = ""
    live: bool = False

    def __init__(self, name: str):
        self.name = name
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.frame_count: int | None = None
        self.paths: list[Path] = []

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:  # noqa: B027 - a default: most sources hold nothing to release
        """Release the device, file or connection (a no-op where there is none)."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
