"""How much of a clip shows faceres' second opinion: the share of shown faces (and of
tracks of 5 frames or more) whose track faceres has looked at, through the app's own
Analyzer with its defaults (re-identification gates: faces of 20 px and more, contrast 14).

usage: python docs/model/wild/opinion_coverage.py VIDEO [VIDEO ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from realtime.analyzer import Analyzer, AnalyzerSettings  # noqa: E402

for video in sys.argv[1:]:
    shown = looked = 0
    frames_of, looked_at = {}, set()
    with Analyzer(AnalyzerSettings(backend="onnxruntime")) as analyzer:
        assert analyzer.reid is not None, "faceres not found: realtime models fetch --from ../shared/models"
        for frame, faces in analyzer.stream(video):
            if faces.track_ids is None:
                continue
            tracks = {t.id: t for t in analyzer.tracker(0).tracks}
            for tid in faces.track_ids.tolist():
                t = tracks.get(tid)
                shown += 1
                frames_of[tid] = frames_of.get(tid, 0) + 1
                if t is not None and t.opinions:
                    looked += 1
                    looked_at.add(tid)
    long = [t for t, n in frames_of.items() if n >= 5]
    print(f"{Path(video).name}: {shown} faces shown, {100 * looked / max(shown, 1):.1f}% with the second opinion; "
          f"{len(long)} tracks of 5+ frames, {100 * sum(t in looked_at for t in long) / max(len(long), 1):.1f}% of them looked at")
