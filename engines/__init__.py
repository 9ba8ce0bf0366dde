"""Model, export and inference backends for realtime; this package never imports
``realtime``.

The public names below are imported when first used, so ``import engines`` (and
``import realtime.errors``, which needs :mod:`engines.errors`) stays light; the
built-in backends register when the registry is first asked for one.
"""

from __future__ import annotations

import importlib

#: Public name -> the module that defines it.
_EXPORTS = {
    "AGE_LABELS": "engines.meta",
    "GENDER_LABELS": "engines.meta",
    "ModelMeta": "engines.meta",
    "Engine": "engines.registry",
    "Predictions": "engines.registry",
    "create_engine": "engines.registry",
    "list_backends": "engines.registry",
    "register_backend": "engines.registry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
