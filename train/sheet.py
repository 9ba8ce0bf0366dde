"""Contact sheets: every face the classifier sees in a video, as it sees it, with its label.

A sheet shows the real model input (the detector's box framed by the cropper at the
model's ``input_size``, replicated edges and all) for every detected face on every
``every``-th frame, captioned with the predicted age group, gender and probability.
It is how the gap between aligned training chips and the app's own crops is looked at.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engines.limits import check_fields
from realtime.errors import RealtimeError

log = logging.getLogger(__name__)


@dataclass
class SheetSettings:
    """One contact sheet.

    Attributes:
        source: a video file, image or folder (anything ``open_source`` reads).
        output: image file to write (.jpg or .png).
        analyzer: detector and model settings (tracking is turned off: raw predictions).
        every: take every ``every``-th frame.
        max_faces: stop after this many faces.
        columns: crops per row.
        scale: each crop is drawn at ``scale`` times the model's input size.
    """

    source: str | Path
    output: Path
    analyzer: object = None  # realtime.analyzer.AnalyzerSettings; imported lazily
    every: int = 4
    max_faces: int = 120
    columns: int = 12
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.output.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            raise RealtimeError(f"{self.output}: a contact sheet is a .jpg or .png image")
        check_fields(self, ("every", "max_faces", "columns", "scale"))  # the one table of limits


@dataclass
class SheetResult:
    output: Path
    frames: int
    faces: int
    labels: dict[str, int] = field(default_factory=dict)


def contact_sheet(settings: SheetSettings) -> SheetResult:
    """Detect and classify faces on every ``every``-th frame of ``settings.source`` and
    write their model inputs, captioned, as one grid image."""
    from dataclasses import replace

    from realtime.faces import Faces
    from realtime.outputs import claim_outputs
    from realtime.analyzer import Analyzer, AnalyzerSettings
    from realtime.sinks import ImageSink
    from realtime.sources import open_source

    analyzer_settings = replace(settings.analyzer or AnalyzerSettings(), track=False)
    analyzer = Analyzer(analyzer_settings)
    meta = analyzer.meta
    tiles, labels, frames = [], Counter(), 0
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open_source(settings.source, reconnect=0, max_pixels=analyzer_settings.max_pixels) as source, claim_outputs(source.paths, [("output", settings.output)]):
            for frame in source:
                if frame.index % settings.every:
                    continue
                frames += 1
                faces = analyzer(frame.image, frame.index)
                crops = analyzer.cropper.cut(frame.image, faces)  # (N, S, S, 3) RGB, what the engine saw
                for crop, age, gender in list(zip(crops, faces.age_probs, faces.gender_probs))[: settings.max_faces - len(tiles)]:
                    label = f"{meta.age_labels[int(age.argmax())]} {meta.gender_labels[int(gender.argmax())][0]}"
                    labels[label] += 1
                    tiles.append(_captioned(crop[..., ::-1], f"#{frame.index} {label} {gender.max():.2f}", settings.scale))
                if len(tiles) >= settings.max_faces:
                    break
            if not tiles:
                raise RealtimeError(f"{settings.source}: no faces found on the frames looked at (every {settings.every}th)")
            ImageSink(settings.output, folder=False).write(frame, Faces.empty(), _grid(tiles, settings.columns))
    finally:
        analyzer.close()
    log.info("%s: %d faces from %d frames", settings.output, len(tiles), frames)
    return SheetResult(settings.output, frames, len(tiles), dict(labels.most_common()))


def _captioned(bgr: np.ndarray, text: str, scale: float) -> np.ndarray:
    """(S, S, 3) crop -> the crop scaled with a caption strip under it."""
    side = max(64, round(bgr.shape[0] * scale))
    tile = cv2.resize(bgr, (side, side), interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
    font = max(0.3, side / 300)
    strip = np.full((round(22 * font / 0.37), side, 3), 32, np.uint8)
    cv2.putText(strip, text, (2, strip.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([tile, strip])


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * (h + 2), min(columns, len(tiles)) * (w + 2), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    return sheet
