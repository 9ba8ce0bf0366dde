"""realtime: age group and gender for every face in live video.

The library's front door (each name is imported when first used, so ``import
realtime`` stays light)::

    from realtime import Analyzer, AnalyzerSettings, OutputSettings, annotate, open_source

    stats = annotate("samples/people.mp4", OutputSettings(media="out.mp4", json="out.jsonl"))
    with Analyzer(AnalyzerSettings(backend="onnxruntime")) as analyzer:
        for frame, faces in analyzer.stream("samples/people.mp4"):
            print(frame.index, faces.boxes, faces.age_classes, faces.gender_classes)
"""

from __future__ import annotations

from engines.lazy import lazy_exports

from realtime.errors import RealtimeError

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "Analyzer": "realtime.analyzer",
    "AnalyzerSettings": "realtime.analyzer",
    "OutputSettings": "realtime.wiring",
    "RunStats": "realtime.loop",
    "annotate": "realtime.pipeline",
    "run": "realtime.pipeline",
    "Faces": "realtime.faces",
    "Frame": "realtime.frames",
    "Source": "realtime.frames",
    "open_source": "realtime.sources",
    "TrackerSettings": "realtime.tracker",
    "Integrations": "realtime.integrations",
    "IntegrationSettings": "realtime.integrations",
    "TrackEvents": "realtime.events",
}

__all__ = ["RealtimeError", "__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
