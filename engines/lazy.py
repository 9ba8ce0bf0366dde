"""Public names a package loads on first use (PEP 562), so importing it stays light."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(namespace: dict, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for ``exports`` (public name -> the
    module that defines it): each name is imported when first asked for, then kept in
    the package's ``namespace`` (its ``globals()``).

    Use: ``__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)``."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
