"""engines.lazy: the packages' names load on first use, and every one of them resolves."""

import importlib
import subprocess
import sys

import pytest

from engines.lazy import lazy_exports


@pytest.mark.parametrize("package", ["engines", "realtime", "train"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nope'"):
        module.nope


def test_a_name_is_imported_when_first_asked_for_and_kept():
    namespace = {"__name__": "pkg"}
    getattr_, dir_ = lazy_exports(namespace, {"sqrt": "math"})
    assert "sqrt" not in namespace and "sqrt" in dir_()
    import math

    assert getattr_("sqrt") is math.sqrt and namespace["sqrt"] is math.sqrt


def test_importing_a_package_imports_none_of_its_names():
    code = "import sys, engines, realtime, train; print(sorted(m for m in ('engines.registry', 'realtime.analyzer', 'train.fit', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
