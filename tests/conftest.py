"""Shared test fixtures: real media from ../shared (skipped with a reason when absent)
and an isolated cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _user_detector_models() -> Path | None:
    """The folder where ``realtime models fetch`` (the README's set-up) put both
    detector models: the user cache, read here before the tests move the cache away."""
    from realtime.detector_models import DETECTOR_MODELS, model_cache_dir

    folder = model_cache_dir()
    return folder if all((folder / m.filename).is_file() for m in DETECTOR_MODELS.values()) else None


if (SHARED / "models").is_dir():
    os.environ.setdefault("REALTIME_MODELS", str(SHARED / "models"))
elif not os.environ.get("REALTIME_MODELS") and (_fetched := _user_detector_models()) is not None:
    os.environ["REALTIME_MODELS"] = str(_fetched)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep ONNX exports and fetched models out of the user's real cache."""
    os.environ["REALTIME_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def detector_models() -> Path:
    """The folder holding both MediaPipe detector models."""
    models = os.environ.get("REALTIME_MODELS")
    if not models or not Path(models).is_dir():
        pytest.skip("needs the MediaPipe detector models: run `realtime models fetch`, or put ../shared/models beside the checkout")
    return Path(models)


@pytest.fixture(scope="session")
def analyzer(detector_models):
    from realtime.analyzer import Analyzer, AnalyzerSettings

    a = Analyzer(AnalyzerSettings(backend="onnxruntime"))
    yield a
    a.close()


