"""`realtime bench`: where the time goes, stage by stage, on a real video.

Three measurements in one run: the full annotate path (decode, detect, crop, classify,
draw, encode) with p50/p95 per stage; the passthrough floor (decode + encode, no
analysis) through the same loop; and classifier crops/s per backend and batch size.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from realtime.annotators import default_annotators
from realtime.errors import RealtimeError
from realtime.analyzer import Analyzer, AnalyzerSettings
from realtime.loop import FrameCallback, RunStats, passthrough, process
from realtime.sinks import VideoSink
from realtime.sources import open_source


@dataclass
class BenchSettings:
    """What to measure. ``max_frames`` caps both video passes (None = whole video)."""

    input: str | Path
    analyzer: AnalyzerSettings = field(default_factory=AnalyzerSettings)
    max_frames: int | None = None
    batches: tuple[int, ...] = (1, 8, 32)
    backends: list[str] | None = None
    classifier_seconds: float = 2.0


@dataclass
class BenchReport:
    input: str
    frames: int
    fps: float
    passthrough_fps: float
    faces_per_frame: float
    backend: str
    stages: dict[str, dict[str, float]]
    classifier: list[dict]
    machine: dict

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"input: {self.input} ({self.frames} frames, {self.faces_per_frame:.2f} faces/frame, backend {self.backend})",
            f"end-to-end: {self.fps:.1f} fps   passthrough floor (decode + encode): {self.passthrough_fps:.1f} fps"
            f"   ratio {self.fps / self.passthrough_fps if self.passthrough_fps else 0:.2f}",
            "",
            f"{'stage':10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}",
        ]
        lines += [f"{name:10} {s['p50_ms']:8.2f} {s['p95_ms']:8.2f} {s['mean_ms']:8.2f}" for name, s in self.stages.items()]
        lines += ["", f"{'backend':12} {'batch':>5} {'crops/s':>9}"]
        lines += [f"{r['backend']:12} {r['batch']:5d} {r['crops_per_s']:9.0f}" for r in self.classifier]
        return "\n".join(lines)


def machine_info() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("torch", "onnxruntime", "openvino", "tensorrt", "mediapipe", "av", "numpy", "opencv-contrib-python"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "versions": versions}
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _frames(source, limit: int | None):
    for frame in source:
        if limit is not None and frame.index >= limit:
            return
        yield frame


def _video_pass(settings: BenchSettings, analyzer: Analyzer | None, workdir: Path, on_frame: FrameCallback | None) -> RunStats:
    with open_source(settings.input) as source:
        if source.kind != "video":
            raise RealtimeError(f"{source.name}: bench needs a video file")
        annotators = default_annotators(analyzer.meta) if analyzer else []
        name = "full.mp4" if analyzer else "passthrough.mp4"
        with VideoSink(workdir / name, source.fps) as sink:
            analyze = analyzer.analyze if analyzer else passthrough
            return process([_frames(source, settings.max_frames)], analyze, [annotators], [[sink]], on_frame)


def _real_crops(settings: BenchSettings, analyzer: Analyzer, want: int = 64) -> np.ndarray | None:
    """Face crops from the video itself, for the classifier measurement."""
    crops = []
    with open_source(settings.input) as source:
        for frame in _frames(source, 50):
            faces = analyzer.detector.detect(frame.image, frame.index)
            crops.append(analyzer.cropper.crop(frame.image, faces))
            if sum(len(c) for c in crops) >= want:
                break
    crops = np.concatenate(crops) if crops else None
    return crops if crops is not None and len(crops) else None


def bench(settings: BenchSettings, on_frame: FrameCallback | None = None) -> BenchReport:
    from engines.bench import classifier_throughput

    analyzer = Analyzer(settings.analyzer)
    try:
        with tempfile.TemporaryDirectory(prefix="realtime-bench-") as tmp:
            floor = _video_pass(settings, None, Path(tmp), on_frame)
            full = _video_pass(settings, analyzer, Path(tmp), on_frame)
        crops = _real_crops(settings, analyzer)
    finally:
        analyzer.close()
    classifier = classifier_throughput(settings.analyzer.model, settings.backends, settings.batches, settings.classifier_seconds, crops=crops)
    return BenchReport(
        input=str(settings.input),
        frames=full.frames,
        fps=round(full.fps, 2),
        passthrough_fps=round(floor.fps, 2),
        faces_per_frame=round(full.faces / max(1, full.frames), 3),
        backend=analyzer.engine.name,
        stages=full.timer.summary(),
        classifier=[{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in classifier],
        machine=machine_info(),
    )
