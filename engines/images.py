"""Reading image files safely: any file name, only regular files, a pixel limit.

Every image the project reads (the app's photos and folders, training and evaluation
sets, calibration crops) comes through :func:`read_image`:

- the file's bytes are read by Python (``np.fromfile``) and decoded from memory
  (``cv2.imdecode``), so a name that is not valid UTF-8 is read like any other
  (``cv2.imread`` on such a name crashes the process; it is used only as the fallback
  for a JPEG cut short, which it decodes in part, and only on a valid UTF-8 name);
- only a regular file is opened (a FIFO named ``x.jpg`` would block the read for ever);
- the image's size is read from its header (Pillow, which reads headers lazily) and an
  image over ``max_pixels`` is refused before it is decoded: a 1 MB PNG can hold
  20000x20000 pixels, 1.2 GB decoded.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np

from engines.errors import RealtimeError
from engines.limits import check

log = logging.getLogger(__name__)

#: Largest image decoded by default (pixels): 50 Mpx, a 1.1 GB frame at most.
DEFAULT_MAX_PIXELS = 50_000_000


def is_regular(path: Path) -> bool:
    """True when ``path`` is (or links to) a regular file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def header_pixels(data: bytes | np.ndarray) -> tuple[int, str] | None:
    """(pixels, "WxH") from an image's header without decoding it; None when Pillow
    is not installed or does not know the format (OpenCV then decodes it whole)."""
    try:
        import io
        import warnings

        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with the install
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(memoryview(data))) as im:
                return im.size[0] * im.size[1], f"{im.size[0]}x{im.size[1]}"
    except Image.DecompressionBombError as e:  # over Pillow's own limit; its message has the size
        import re

        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        return pixels, f"{pixels / 1e6:.0f} Mpx"
    except Exception:  # noqa: BLE001 - Pillow raises many types for what it cannot read
        return None


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 BGR of the image file ``path``; one RealtimeError when it is not
    a regular file, cannot be decoded, or has more than ``max_pixels`` pixels."""
    check("max_pixels", max_pixels)
    return decode_image(read_bytes(path), path, max_pixels)


def read_bytes(path: str | Path) -> np.ndarray:
    """(B,) uint8: the bytes of the regular file ``path`` (one RealtimeError when it is
    missing, not a regular file or cannot be read). Hash them and :func:`decode_image`
    them to read a file once."""
    path = Path(path)
    if not is_regular(path):
        kind = "missing" if not os.path.lexists(path) else "not a regular file (a FIFO, device or folder)"
        raise RealtimeError(f"{path}: {kind}; not read as an image")
    try:
        return np.fromfile(path, np.uint8)
    except (OSError, ValueError) as e:
        raise RealtimeError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None


def decode_image(data: np.ndarray, path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 BGR of ``data``, the bytes of the image file ``path`` (named in
    errors; a JPEG cut short is decoded in part from it); one RealtimeError when it
    cannot be decoded or has more than ``max_pixels`` pixels."""
    import cv2

    path = Path(path)
    header = header_pixels(data)
    if header is not None and header[0] > max_pixels:
        raise RealtimeError(f"{path}: {header[1]} is over the limit of {max_pixels / 1e6:g} Mpx (--max-pixels)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if len(data) else None
        if image is None and len(data) and _utf8(path):
            # imdecode refuses what imread decodes in part (a JPEG cut short: its missing
            # part grey); imread is safe on a name that is valid UTF-8
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        hint = " (HEIC photos: convert them to JPEG)" if path.suffix.lower() in (".heic", ".heif") else ""
        raise RealtimeError(f"{path}: not a readable image{hint}")
    if image.shape[0] * image.shape[1] > max_pixels:  # a format whose header Pillow does not read
        raise RealtimeError(f"{path}: {image.shape[1]}x{image.shape[0]} is over the limit of {max_pixels / 1e6:g} Mpx (--max-pixels)")
    return image


def _utf8(path: Path) -> bool:
    """True when ``path`` is valid UTF-8 (no surrogates: OpenCV's own reader takes it)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
