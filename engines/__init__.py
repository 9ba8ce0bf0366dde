"""Model, export and inference backends for realtime; this package never imports
``realtime``.

The public names below are imported when first used, so ``import engines`` (and
``import realtime.errors``, which needs :mod:`engines.errors`) stays light; the
built-in backends register when the registry is first asked for one.
"""

from __future__ import annotations

from engines.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
