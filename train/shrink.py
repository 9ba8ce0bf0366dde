"""A smaller copy of a labelled face set, to move it to a training machine (a GPU box
behind a narrow link): every image resized to ``--side`` and re-encoded as WebP, names
and labels kept, the split checked to be unchanged.

    python -m train.shrink ../shared/data/utkface /tmp/utk128 --side 128 --quality 85

Works on sets described by a ``labels.csv`` (the UTKFace release, ``--format csv``).
Each image keeps its name plus ``.webp`` (so UTKFace's capture keys survive) and its CSV
row, and a ``realtime facecrops`` set its ``facecrops.json`` (levelled or not, framing).
Identical images stay identical (the encoder is deterministic); the split keys of
the copy are compared with the source's, and a copy whose split would differ (two
different images that became byte-identical) is refused. MODEL_CARD.md's default model
was trained from such a copy (128 px, WebP quality 85: 47 MB for 21,716 faces).
"""

from __future__ import annotations

import argparse
import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from engines.errors import RealtimeError
from engines.images import read_image
from train.croprecord import read_record, write_record
from train.formats import load_dataset


def _shrink_one(job: tuple[Path, Path, int, int]) -> bool:
    src, dst, side, quality = job
    try:
        image = read_image(src)
    except RealtimeError:
        return False
    if max(image.shape[:2]) > side:
        scale = side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data.tobytes())
    return bool(ok)


def shrink(src: Path, dst: Path, fmt: str = "utkface", side: int = 128, quality: int = 85, workers: int = 2) -> int:
    """Copy the set at ``src`` (a folder with ``labels.csv``) to ``dst`` with every image at
    most ``side`` px on its longer side, WebP at ``quality``. Returns the number of images
    written; rows whose image cannot be read are dropped (the loader skips them too)."""
    src, dst = Path(src), Path(dst)
    labels = src / "labels.csv"
    if not labels.is_file():
        raise RealtimeError(f"{src}: no labels.csv here; train.shrink copies sets described by one")
    if dst.exists() and any(dst.iterdir()):
        raise RealtimeError(f"{dst}: exists and is not empty; give a new folder")
    with open(labels, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    jobs = [(src / r["file"], dst / (r["file"] + ".webp"), side, quality) for r in rows]
    # Threads, not processes: OpenCV releases the GIL while it decodes, resizes and encodes,
    # and forking a process that already runs threads (ONNX Runtime, MediaPipe) can hang.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        written = list(pool.map(_shrink_one, jobs))
    with open(dst / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**r, "file": r["file"] + ".webp"} for r, ok in zip(rows, written) if ok)
    record = read_record(src)
    if record is not None:  # a facecrops set: how its crops were cut (levelled, framing) holds for the copy
        sides = record.get("side")
        write_record(dst, {**record, "side": min(side, sides)} if type(sides) is int else record)
    before, after = load_dataset(src, fmt), load_dataset(dst, fmt)
    key_of = dict(zip((Path(f).name for f in before.files), before.split_keys()))
    pairs = [(key_of.get(Path(f).name[: -len(".webp")]), k) for f, k in zip(after.files, after.split_keys())]
    if len({a for a, _ in pairs}) != len(set(pairs)) or len({b for _, b in pairs}) != len(set(pairs)):
        raise RealtimeError(f"{dst}: the copy would split differently from {src} (images merged or parted); train on the original")
    return sum(written)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--format", default="utkface", choices=["utkface", "csv"])
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        n = shrink(args.src, args.dst, args.format, args.side, args.quality, args.workers)
    except RealtimeError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {n} images and labels.csv to {args.dst}")


if __name__ == "__main__":
    main()
