"""engines.registry: backends register by name and load on demand; create_engine picks,
falls back and checks the crops it is given."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from engines import registry
from engines.errors import RealtimeError
from engines.meta import ModelMeta
from engines.registry import AUTO_ORDER, Engine, create_engine, list_backends, register_backend
from tests.helpers import ROOT


class Uniform(Engine):
    """A real (if useless) engine: every face is equally likely to be anything, 30 years."""

    name = "uniform"

    def _infer(self, crops):
        n, a, g = len(crops), len(self.meta.age_labels), len(self.meta.gender_labels)
        return np.full((n, a), 1 / a), np.full((n, g), 1 / g), np.full((n, 1), 30.0)


@pytest.fixture
def plugins():
    """Two backends registered like any plugin: one that loads, one whose load fails."""

    @register_backend("uniform", requires="numpy")
    def uniform(path):
        return Uniform(ModelMeta(input_size=32))

    @register_backend("broken", requires="numpy")
    def broken(path):
        raise RealtimeError("this backend cannot load anything")

    @register_backend("absent", requires="no_such_module_for_realtime_tests")
    def absent(path):
        raise AssertionError("never called: its module is not installed")

    yield
    for name in ("uniform", "broken", "absent"):
        registry._BACKENDS.pop(name)
        registry._REQUIRES.pop(name)


def test_built_ins_register_on_first_use_in_auto_order():
    names = list_backends()
    assert [n for n in AUTO_ORDER if n in names] == list(AUTO_ORDER)
    code = "import sys, engines, engines.registry\nprint('engines.backends' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"  # importing the package loads no backend


def test_by_name_and_in_order_with_fallback(plugins, caplog):
    assert {"uniform", "broken", "absent"} <= set(list_backends()) and "absent" not in list_backends(available_only=True)
    engine = create_engine(None, "uniform")
    out = engine.infer(np.zeros((3, 3, 32, 32), np.float32))
    assert out.age_probs.shape == (3, 8) and out.age_years.shape == (3,) and out.age_years.dtype == np.float32
    assert np.allclose(out.gender_probs.sum(1), 1)
    with caplog.at_level(logging.INFO, logger="engines.registry"):
        engine = create_engine(None, ["absent", "broken", "uniform"])
    assert engine.name == "uniform"
    assert "backend broken cannot load this model: this backend cannot load anything" in caplog.text
    assert "absent not installed, broken failed" in caplog.text


def test_mistakes_are_one_line(plugins, tmp_path):
    with pytest.raises(RealtimeError, match="unknown backend 'nope'; choose one of: auto, "):
        create_engine(None, "nope")
    with pytest.raises(RealtimeError, match=r"no backend could load the default model \(broken failed\)"):
        create_engine(None, ["broken"])
    with pytest.raises(RealtimeError, match="backend 'absent' needs no_such_module_for_realtime_tests"):
        create_engine(None, "absent")
    with pytest.raises(RealtimeError, match="model file not found"):
        create_engine(tmp_path / "none.onnx", "uniform")


def test_infer_checks_the_crops_and_takes_an_empty_batch(plugins):
    engine = create_engine(None, "uniform")
    with pytest.raises(ValueError, match=r"crops must have shape \(N, 3, 32, 32\)"):
        engine.infer(np.zeros((1, 3, 16, 16), np.float32))
    out = engine.infer(np.zeros((0, 3, 32, 32), np.float32))
    assert out.age_probs.shape == (0, 8) and out.gender_probs.shape == (0, 2) and out.age_years.shape == (0,)
