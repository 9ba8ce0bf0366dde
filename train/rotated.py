"""A rotated copy of a labelled set's held-out faces: how the app's crops fare on heads
that are not upright (``--level-eyes``, see :class:`engines.crops.Cropper`).

Each held-out image is first set in a frame ``context`` times its side (edges
replicated, as ``realtime eval --context`` does) and then turned about its centre by a
seeded uniform angle in [-``max_angle``, ``max_angle``] degrees (corners replicated),
written under the same relative name, with the set's own label rows (so the copy reads
in the same format and keeps the same split keys) and ``angles.csv`` (file, degrees,
counter-clockwise on screen). Evaluate it through the detector as it is
(``--context 1``)::

    python -m train.rotated ../shared/data/utkface /tmp/utk_rot30 --holdout 0.15
    realtime eval --data /tmp/utk_rot30 --format utkface --predictions P.csv --json J.json
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from engines.errors import RealtimeError
from engines.images import read_image
from engines.writes import write_atomic
from train.data import holdout_mask
from train.formats import load_dataset
from train.evaluate import in_context

log = logging.getLogger(__name__)

#: Encoder settings by suffix: near-lossless, so the copy differs from the set by the turn.
_QUALITY = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95]}


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """BGR (H, W, 3) turned ``angle`` degrees counter-clockwise on screen about its
    centre, same size, corners replicated."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def write_rotated(src: Path, dst: Path, fmt: str = "utkface", holdout: float = 0.15, max_angle: float = 30.0,
                  context: float = 2.0, seed: int = 0) -> int:
    """Write the rotated copy of ``src``'s held-out share to the new folder ``dst``;
    returns the number of images written. ``src`` must have a ``labels.csv``."""
    labels = src / "labels.csv"
    if not labels.is_file():
        raise RealtimeError(f"{src}: no labels.csv")
    if dst.exists() and any(dst.iterdir()):
        raise RealtimeError(f"{dst}: exists and is not empty; give a new folder")
    if not 0 <= max_angle <= 180:
        raise RealtimeError(f"--max-angle must be in [0, 180], got {max_angle}")
    data = load_dataset(src, fmt)
    held = {Path(f).resolve() for f in data[holdout_mask(data, holdout)].files}
    rng = np.random.default_rng(seed)
    with labels.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if (src / r["file"]).resolve() in held]
        columns = reader.fieldnames
    out, angles = io.StringIO(), io.StringIO()
    writer, turned = csv.DictWriter(out, columns), csv.writer(angles)
    writer.writeheader()
    turned.writerow(["file", "angle"])
    written = 0
    for row in rows:
        try:
            image = read_image(src / row["file"])
        except RealtimeError as e:
            log.warning("skipping %s", e)
            continue
        angle = float(rng.uniform(-max_angle, max_angle))
        target = dst / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), rotate(in_context(image, context), angle), _QUALITY.get(target.suffix.lower(), [])):
            raise RealtimeError(f"{target}: could not be written")
        writer.writerow(row)
        turned.writerow([row["file"], f"{angle:.3f}"])
        written += 1
    write_atomic(dst / "angles.csv", angles.getvalue(), "angles")
    write_atomic(dst / "labels.csv", out.getvalue(), "labels")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.rotated", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--format", default="utkface")
    parser.add_argument("--holdout", type=float, default=0.15)
    parser.add_argument("--max-angle", type=float, default=30.0)
    parser.add_argument("--context", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    try:
        n = write_rotated(a.src, a.dst, a.format, a.holdout, a.max_angle, a.context, a.seed)
    except RealtimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{n} images rotated by up to {a.max_angle:g} degrees -> {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
