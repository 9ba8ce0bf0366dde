"""The one error type for mistakes a user can make.

It is defined in :mod:`engines.errors` (the layer below, which never imports
``realtime``) and is the same class here.
"""

from engines.errors import RealtimeError

__all__ = ["RealtimeError"]
