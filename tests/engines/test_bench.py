"""`engines.bench`: classifier crops/s per backend."""

from __future__ import annotations

from engines.bench import classifier_throughput


def test_classifier_throughput(checkpoint, crops):
    rows = classifier_throughput(checkpoint, ["onnxruntime", "no-such-backend"], batches=(1, 4), seconds=0.05,
                                 warmup=1, crops=crops)
    assert [(r["backend"], r["batch"]) for r in rows] == [("onnxruntime", 1), ("onnxruntime", 4)]
    assert all(r["crops_per_s"] > 0 and r["ms_per_batch"] > 0 for r in rows)
